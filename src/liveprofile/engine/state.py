"""The pipeline state the core works on, and how it is committed to and loaded from a store.

Everything that influences future results is here and is committed in one store transaction per
batch: profiles, item statistics, learners, pending examples, metrics, the de-duplication window,
the watermark and the source offset. Loading it back gives a state that continues exactly as the
uninterrupted run would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from itertools import islice
from typing import Any, TypeVar

import msgspec

from liveprofile.config import PipelineConfig
from liveprofile.durations import DAY
from liveprofile.engine.lazyprofiles import ProfileMap, peek
from liveprofile.engine.linkindex import LinkIndex, LinkMap
from liveprofile.events.dedup import DedupWindow
from liveprofile.learn.registry import load_learner, make_learner
from liveprofile.learn.regression import metrics_from_bytes
from liveprofile.learn.tasks import PendingColumns, PendingLog, TaskState, decode_logs, encode_logs
from liveprofile.learn.tracked import ModelSink, ModelTracker, model_sink, stage_change
from liveprofile.profile.items import ItemStats, decode_item, encode_item
from liveprofile.profile.population import Population
from liveprofile.profile.risk import AnomalyScorer
from liveprofile.profile.segments import SegmentChange
from liveprofile.profile.state import Profile, decode_profile, encode_profile
from liveprofile.store.base import Store
from liveprofile.store.codec import damaged, pack, unpack
from liveprofile.store.layout import (
    ALIASES,
    ANOMALY,
    CHECKPOINT,
    DEDUP,
    EXPIRY,
    ITEMS,
    LINKS_BY_TARGET,
    PENDING,
    POPULATION,
    PROFILES,
    SEGMENT_HISTORY,
    STATE_SCHEMA,
    Checkpoint,
    decode_checkpoint,
    encode_checkpoint,
    metrics_meta,
    model_meta,
    segment_namespace,
)

T = TypeVar("T")
#: points of segment-size history kept; when full, every other point goes (half resolution)
HISTORY_POINTS = 512


class PipelineState:
    """All state of a running pipeline; the core mutates it, runners load and commit it."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        #: profiles by user; the compiled step may hold their kernel fields as bytes
        #: (:mod:`liveprofile.engine.lazyprofiles`), decoded when read
        self.profiles: dict[str, Profile] = ProfileMap()
        self.items: dict[str, ItemStats] = {}
        self.tasks: dict[str, TaskState] = {}
        for task in config.tasks:
            state = TaskState(
                task, make_learner(task.learner, config.features.bits), config.run.metrics_window_s
            )
            self.tasks[task.name] = state
        self.dedup = DedupWindow(config.run.dedup_window)
        self.checkpoint = Checkpoint()
        self.population = Population()
        self._dedup_chunks: deque[tuple[int, int]] = deque()
        self._resting_profiles: dict[str, bytes] = {}
        self._resting_items: dict[str, bytes] = {}
        #: members of each configured segment
        self.members: dict[str, set[str]] = {name: set() for name in config.segments}
        #: (watermark, {segment: members}) after each batch, thinned to HISTORY_POINTS
        self.segment_history: list[tuple[float, dict[str, int]]] = []
        #: identity links read so far: anonymous id -> user id
        self.aliases = LinkMap()
        #: the stored links of the ids read so far, to keep the links' index by target
        self.link_index = LinkIndex()
        #: users of the last-seen index rows loaded for this batch: row key -> users
        self._expiry_loaded: dict[str, list[str]] = {}
        #: the pipeline's anomaly detector, when ``risk.anomaly`` is on
        self.anomaly = AnomalyScorer(config.risk) if config.risk.anomaly else None
        #: the store that takes models as the coordinates a batch changed (None: whole blobs)
        self.model_sink: ModelSink | None = None
        self._trackers: dict[str, ModelTracker] = {}

    @property
    def watermark(self) -> float:
        return self.checkpoint.watermark

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, store: Store, config: PipelineConfig) -> PipelineState:
        """The last committed state in ``store`` (fresh state if the store is empty).

        Profiles and items are loaded lazily by the runner; pending examples, learners,
        metrics and the de-duplication window are loaded here.
        """
        state = cls(config)
        state.model_sink = model_sink(store)
        blob = store.get_meta(CHECKPOINT)
        if blob is None:
            return state
        ckpt = decode_checkpoint(blob)
        state.checkpoint = ckpt
        population = store.get_meta(POPULATION)
        if population is not None:
            with damaged("meta row", "population"):
                state.population = msgspec.msgpack.decode(population, type=Population)
        state._dedup_chunks = deque(ckpt.dedup_chunks)
        for name, task in state.tasks.items():
            model = store.get_meta(model_meta(name))
            if model is not None:
                with damaged("meta row", model_meta(name)):
                    task.learner = load_learner(model)
            metrics = store.get_meta(metrics_meta(name))
            if metrics is not None:
                with damaged("meta row", metrics_meta(name)):
                    task.metrics = metrics_from_bytes(metrics)
        detector = store.get_meta(ANOMALY)
        if detector is not None and state.anomaly is not None:
            with damaged("meta row", ANOMALY):
                state.anomaly = AnomalyScorer.load(config.risk, detector)
        logs = []
        for key, value in store.scan(PENDING):
            with damaged("pending row", key):
                logs.append(decode_logs(value))
        for name, task in state.tasks.items():
            task.restore_log((log[name] for log in logs if name in log), ckpt.watermark)
        for name, members in state.members.items():
            members.update(user for user, _ in store.scan(segment_namespace(name)))
        history = store.get_meta(SEGMENT_HISTORY)
        if history is not None:
            with damaged("meta row", "segments/history"):
                state.segment_history = msgspec.msgpack.decode(
                    history, type=list[tuple[float, dict[str, int]]]
                )
        ids: list[str] = []
        for key, value in store.scan(DEDUP):
            with damaged("dedup row", key):
                ids.extend(msgspec.msgpack.decode(unpack(value), type=list[str]))
        state.dedup.restore(ids[-config.run.dedup_window :] if config.run.dedup_window else [])
        return state

    def ensure_loaded(self, store: Store, users: set[str], items: set[str]) -> None:
        """Decode the profiles and item statistics a batch needs, from the compact copies kept
        in memory (see :meth:`compact`) or else from the store in one read per namespace."""
        _load(store, PROFILES, users, self.profiles, self._resting_profiles, decode_profile)
        _load(store, ITEMS, items, self.items, self._resting_items, decode_item)

    def ensure_aliases(self, store: Store, ids: set[str]) -> None:
        """Read the identity links of ``ids`` not read yet (one store read)."""
        stored = self.link_index.stored
        missing = [i for i in ids if i not in stored]
        if not missing:
            return
        for anon, user in zip(missing, store.read(ALIASES, missing), strict=True):
            stored[anon] = None
            if user is not None:
                with damaged("alias row", anon):
                    stored[anon] = self.aliases[anon] = user.decode()

    def take_aliases(self, links: dict[str, str]) -> None:
        """Take identity links read from the store some other way (through the links' index,
        or a scan), for the ids whose link has not been read yet (the state's own are current)."""
        stored = self.link_index.stored
        for anon, user in links.items():
            if anon not in stored:
                stored[anon] = self.aliases[anon] = user

    # -- expiry: users indexed by the day of their last event ----------------------------------

    def ensure_expiry(self, store: Store, horizon: float, ttl: float) -> None:
        """Read the last-seen index rows that may be due by event time ``horizon``."""
        keys = [
            _expiry_key(day, seq)
            for day, seq in self.checkpoint.expiry_chunks
            if (day + 1) * DAY + ttl < horizon and _expiry_key(day, seq) not in self._expiry_loaded
        ]
        for key, blob in zip(keys, store.read(EXPIRY, keys), strict=True):
            with damaged("expiry row", key):
                self._expiry_loaded[key] = [] if blob is None else _decode_users(blob)

    def expiry_candidates(self) -> set[str]:
        return {u for users in self._expiry_loaded.values() for u in users}

    def take_expiry_candidates(
        self, at: float, ttl: float, rows: dict[str, bytes | None]
    ) -> list[str]:
        """Users of the index rows due at event time ``at`` (every user in them was last seen
        more than ``ttl`` before ``at`` when indexed); the rows are deleted in ``rows``."""
        out: list[str] = []
        kept = []
        for day, seq in self.checkpoint.expiry_chunks:
            key = _expiry_key(day, seq)
            if (day + 1) * DAY + ttl < at and key in self._expiry_loaded:
                out.extend(self._expiry_loaded.pop(key))
                rows[key] = None
            else:
                kept.append((day, seq))
        self.checkpoint.expiry_chunks = kept
        return out

    def index_last_seen(self, profiles: list[Profile], rows: dict[str, bytes | None]) -> None:
        """Index ``profiles`` by the day of their last event, one row per day and batch."""
        by_day: dict[int, list[str]] = {}
        for p in profiles:
            by_day.setdefault(int(p.last_ts // DAY), []).append(p.user)
        seq = self.checkpoint.seq
        for day, users in sorted(by_day.items()):
            rows[_expiry_key(day, seq)] = pack(msgspec.msgpack.encode(sorted(users)))
            self.checkpoint.expiry_chunks.append((day, seq))

    def compact(self, rows: Mapping[str, Mapping[str, bytes | None]]) -> None:
        """After a commit, keep profiles and items as their committed bytes (a few hundred
        bytes each instead of a few KB of Python objects) until a batch needs them again; the
        ``run.hot_profiles`` most recently updated profiles also stay decoded."""
        cap = self.config.run.resting_profiles
        for live, resting, namespace, keep in (
            (self.profiles, self._resting_profiles, PROFILES, self.config.run.hot_profiles),
            (self.items, self._resting_items, ITEMS, 0),
        ):
            changed = rows.get(namespace, {})
            for key, blob in changed.items():
                if blob is None:
                    resting.pop(key, None)
                    live.pop(key, None)
                elif cap and namespace == "profile":
                    resting.pop(key, None)  # the most recently updated go last
                    resting[key] = blob
                else:
                    resting[key] = blob
            if cap and namespace == "profile" and len(resting) > cap:
                for key in list(islice(resting, len(resting) - cap)):
                    del resting[key]  # committed: read from the store again when needed
            if len(live) <= keep and not changed:
                continue
            if not keep:
                live.clear()
                continue
            for key in changed:  # the most recently updated go last
                if isinstance(live, ProfileMap):
                    if key in live:
                        live.move_to_end(key)  # held or not
                    continue
                value = live.pop(key, None)
                if value is not None:
                    live[key] = value  # type: ignore[assignment]
            for key in list(islice(live, max(0, len(live) - keep))):
                del live[key]

    # -- committing ----------------------------------------------------------------------------

    def commit_payload(
        self,
        users: set[str],
        items: set[str],
        pending: Mapping[str, PendingLog | PendingColumns],
        changes: Sequence[SegmentChange] = (),
        *,
        deleted: Collection[str] = (),
        links: Mapping[str, str | None] | None = None,
        expiry: Mapping[str, bytes | None] | None = None,
        item_rows: Mapping[str, bytes] | None = None,
        profile_rows: Mapping[str, bytes] | None = None,
    ) -> tuple[dict[str, dict[str, bytes | None]], dict[str, bytes]]:
        """Row changes and blobs that persist this batch (see :meth:`Store.commit`);
        ``item_rows`` and ``profile_rows`` are records already encoded."""
        ckpt = self.checkpoint
        profiles = self.profiles
        done = profile_rows or {}
        # the rows the step encoded, then those of the users it left to encode here
        mine: dict[str, bytes | None] = (
            dict(done) if done.keys() <= users else {u: done[u] for u in done.keys() & users}
        )
        for user in users - done.keys():
            mine[user] = encode_profile(profiles[user])
        rows: dict[str, dict[str, bytes | None]] = {
            PROFILES: mine,
            ITEMS: {i: encode_item(self.items[i]) for i in items},
            PENDING: self._pending_rows(pending),
        }
        if item_rows:
            rows[ITEMS].update(item_rows)
        for user in deleted:
            if user not in profiles:
                rows[PROFILES][user] = None
        if links:
            rows[ALIASES] = {a: None if u is None else u.encode() for a, u in links.items()}
        if links or self.link_index.pending or self.link_index.built:
            rows[LINKS_BY_TARGET] = self.link_index.rows(links or {})
            if self.link_index.built:  # every link is indexed from this commit on
                ckpt.schema, self.link_index.built = STATE_SCHEMA, False
        if expiry:
            rows[EXPIRY] = dict(expiry)
        self._membership_rows(rows, changes, deleted)
        new_ids = self.dedup.take_new()
        dedup: dict[str, bytes | None] = {}
        if new_ids:
            dedup[f"{ckpt.seq:012d}"] = pack(msgspec.msgpack.encode(new_ids))
            self._dedup_chunks.append((ckpt.seq, len(new_ids)))
            kept = sum(n for _, n in self._dedup_chunks)
            while self._dedup_chunks and kept - self._dedup_chunks[0][1] >= self.dedup.size:
                old_seq, n = self._dedup_chunks.popleft()
                kept -= n
                dedup[f"{old_seq:012d}"] = None
        rows[DEDUP] = dedup
        ckpt.dedup_chunks = list(self._dedup_chunks)
        meta: dict[str, bytes] = {}
        for name, task in self.tasks.items():
            assert task.learner is not None
            if not getattr(task.learner, "stored_apart", False):  # a shared model stages its own
                blob = stage_change(self.model_sink, self._trackers, model_meta(name), task.learner)
                if blob is not None:
                    meta[model_meta(name)] = blob
            meta[metrics_meta(name)] = task.metrics.to_bytes()
        if self.anomaly is not None:
            meta[ANOMALY] = self.anomaly.dump()
        ckpt.seq += 1
        if self.members:
            meta[SEGMENT_HISTORY] = self._record_sizes()
        meta[POPULATION] = self.population.to_bytes()
        meta[CHECKPOINT] = encode_checkpoint(ckpt)
        return rows, meta

    def _membership_rows(
        self,
        rows: dict[str, dict[str, bytes | None]],
        changes: Sequence[SegmentChange],
        deleted: Collection[str],
    ) -> None:
        """Member rows of the (segment, user) pairs this batch touched, as they end up."""
        entered = {(c.segment, c.user_id): c.ts for c in changes if c.change == "enter"}
        touched = {(c.segment, c.user_id) for c in changes}
        touched.update((segment, user) for user in deleted for segment in self.members)
        for segment, user in touched:
            members = self.members.get(segment)
            if members is not None and user in members:
                if (segment, user) in entered:
                    value = msgspec.msgpack.encode(entered[segment, user])
                    rows.setdefault(segment_namespace(segment), {})[user] = value
            else:
                rows.setdefault(segment_namespace(segment), {})[user] = None

    def _record_sizes(self) -> bytes:
        history = self.segment_history
        sizes = {name: len(members) for name, members in self.members.items()}
        history.append((self.checkpoint.watermark, sizes))
        if len(history) > HISTORY_POINTS:
            history[:] = history[-1::-2][::-1]  # keep the latest point and every other one
        return msgspec.msgpack.encode(history)

    def _pending_rows(
        self, logs: Mapping[str, PendingLog | PendingColumns]
    ) -> dict[str, bytes | None]:
        """One row per batch with its pending logs; rows whose examples are all closed go.

        Rows are dropped oldest first only, so a conversion recorded in a row never outlives
        the row holding the example it converted.
        """
        ckpt = self.checkpoint
        rows: dict[str, bytes | None] = {}
        logs = {name: log for name, log in logs.items() if log}
        if logs:
            rows[f"{ckpt.seq:012d}"] = encode_logs(logs)
            latest = max(log.max_deadline() for log in logs.values())
            ckpt.pending_chunks.append((ckpt.seq, latest))
        while ckpt.pending_chunks and ckpt.pending_chunks[0][1] < ckpt.watermark:
            seq, _ = ckpt.pending_chunks.pop(0)
            rows[f"{seq:012d}"] = None
        return rows

    def summary(self) -> dict[str, Any]:
        ckpt = self.checkpoint
        return {
            "events": ckpt.events,
            "duplicates": ckpt.duplicates,
            "dead_letters": ckpt.dead_letters,
            "watermark": ckpt.watermark,
            "tasks": {name: t.metrics.summary() for name, t in self.tasks.items()},
        }


def _expiry_key(day: int, seq: int) -> str:
    return f"{day:08d}:{seq:012d}"


def _decode_users(blob: bytes) -> list[str]:
    return msgspec.msgpack.decode(unpack(blob), type=list[str])


def _load(
    store: Store,
    namespace: str,
    wanted: set[str],
    live: dict[str, T],
    resting: dict[str, bytes],
    decode: Callable[[bytes, str], T],
) -> None:
    missing = []
    for key in wanted:
        if key in live:
            continue
        blob = resting.get(key)
        if blob is None:
            missing.append(key)
        else:
            live[key] = decode(blob, key)
    if missing:
        for key, found in zip(missing, store.read(namespace, missing), strict=True):
            if found is not None:
                resting[key] = found
                live[key] = decode(found, key)


__all__ = ["HISTORY_POINTS", "STATE_SCHEMA", "Checkpoint", "PipelineState", "segment_namespace"]


def scores_in_task_order(
    profiles: dict[str, Profile], users: Collection[str], tasks: Mapping[str, object]
) -> None:
    """Put each profile's scores in the order of the pipeline's tasks, so that its stored
    bytes do not depend on the order in which a batch happened to score the tasks (events
    applied in order, or a visitor's scores passed on at a login).

    >>> from liveprofile.profile.state import Profile
    >>> p = Profile("u", 0.0, 0.0, 0.0, scores={"b": 0.2, "a": 0.1})
    >>> scores_in_task_order({"u": p}, ["u"], {"a": None, "b": None})
    >>> list(p.scores)
    ['a', 'b']
    """
    rank = {name: k for k, name in enumerate(tasks)}
    # the keys of most profiles' scores come in a few orders: each is sorted once
    orders: dict[tuple[str, ...], list[str] | None] = {}
    for u in users:
        p = peek(profiles, u)
        assert p is not None
        scores = p.scores
        if len(scores) > 1:
            keys = tuple(scores)
            if keys in orders:
                ordered = orders[keys]
            else:
                ordered = sorted(keys, key=lambda k: rank.get(k, len(rank)))
                ordered = orders[keys] = None if list(keys) == ordered else ordered
            if ordered is not None:
                p.scores = {k: scores[k] for k in ordered}

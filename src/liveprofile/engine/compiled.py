"""The compiled path of the core: a batch laid out as arrays and run by :mod:`.kernel`.

:class:`CompiledStep` does what :meth:`liveprofile.engine.step.PythonStep.step` does, with the
same results, for the pipelines and batches it supports: no identity links, erasures,
profile TTL, velocity counts or anomaly scores (those batches, and those pipelines, take the
Python core). Profiles and item statistics stay :class:`Profile` and :class:`ItemStats` objects
between batches, as the runners load and commit them; the open pending examples live in arrays
owned by this class and are handed back to the tasks whenever a batch takes the Python core.

Strings (users, items, topics, event types) get integer codes on first sight; the feature
indices, cross hashes and key-outcome names of each code are computed once, with the Python
feature builder's own functions.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt
from numba import types as nbtypes
from numba.typed import Dict as TypedDict

from liveprofile.engine import kernel as K
from liveprofile.engine import layout as L
from liveprofile.engine.layout import ITEM_FLOATS, SPEND_ROOM, feature_tables
from liveprofile.engine.packing import StringTable, encode_items
from liveprofile.engine.state import PipelineState
from liveprofile.engine.step import PythonStep, StepResult
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import FORGET, Event
from liveprofile.learn.base import OpArrays, run_ops, sparse_example
from liveprofile.learn.tasks import Pending, PendingColumns, PendingLog, split_ones
from liveprofile.profile.population import Standing, standing
from liveprofile.profile.risk import stamp, velocity_item
from liveprofile.profile.state import Profile, key_outcome_name

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def unsupported(base: PythonStep) -> str | None:
    """Why this pipeline cannot take the compiled path, or None if it can."""
    config = base.config
    if config.risk.anomaly:
        return "the anomaly detector is on"
    if base.ttl is not None:
        return "profiles expire (run.profile_ttl)"
    return None


class _Codes:
    """Integer codes for strings, with per-code tables that grow as codes are added."""

    def __init__(self) -> None:
        self.code: dict[str, int] = {}
        self.names: list[str] = []
        self._rank: I64 | None = None
        self._order: list[int] = []  # the codes in the sorted order of their strings

    def __len__(self) -> int:
        return len(self.names)

    def add_missing(self, values: Sequence[str]) -> list[str]:
        """Give codes to the values not seen before; returns them."""
        code = self.code
        new = [v for v in dict.fromkeys(values) if v not in code]
        for v in new:
            code[v] = len(self.names)
            self.names.append(v)
        if new:
            self._rank = None
        return new

    def rank(self) -> I64:
        """Each code's position in the sorted order of the strings."""
        if self._rank is None:  # reset whenever a code is added
            key = self.names.__getitem__
            fresh = sorted(range(len(self._order), len(self.names)), key=key)
            # two sorted runs: the sort merges them in linear time
            self._order = sorted(self._order + fresh, key=key)
            rank = np.empty(len(self._order), dtype=np.int64)
            rank[self._order] = np.arange(len(self._order))
            self._rank = rank
        return self._rank


def _grow(a: Any, n: int, fill: Any = 0) -> Any:
    """``a`` with at least ``n`` rows (doubling), new rows filled with ``fill``."""
    if a.shape[0] >= n:
        return a
    rows = max(n, 2 * a.shape[0], 64)
    b = np.full((rows, *a.shape[1:]), fill, dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


class CompiledStep:
    """The compiled counterpart of :meth:`PythonStep.step`; see the module's docstring."""

    def __init__(self, base: PythonStep) -> None:
        #: the Python step whose per-batch work (traits, segments, expiry) this shares
        self.base = base
        config = base.config
        self.features = base.features
        self.updater = base.updater
        self.tasks = list(config.tasks)
        self.names = [t.name for t in self.tasks]
        nt = len(self.tasks)
        self.users, self.items, self.topics, self.types = _Codes(), _Codes(), _Codes(), _Codes()
        # per-code tables
        self.user_fidx = np.zeros(0, np.int64)
        self.user_part = np.zeros(0, np.int64)
        self.item_fidx = np.zeros(0, np.int64)
        self.item_crc = np.zeros(0, np.int64)
        self.topic_fidx = np.zeros(0, np.int64)
        self.topic_part = np.zeros(0, np.int64)
        self.topic_track = np.zeros(0, np.bool_)
        self.ko_topic = np.zeros((nt, 0), np.int64)
        self.ko_item = np.zeros((nt, 0), np.int64)
        self.type_tables: tuple[Any, ...] = ()
        self._track = frozenset(config.profile.track)
        builder = self.features
        self.fc, self.tabs, self.tab_last = feature_tables(builder)
        self.fp = np.array(
            [
                self.updater.h_counters,
                self.updater.h_interests,
                min(self.updater.h_counters, self.updater.h_interests),
                0.0,
                builder.RATE_PRIOR,
                builder.RATE_STRENGTH,
                2.0,
            ]
        )
        self.ip = np.array(
            [
                int(config.features.crosses),
                int(config.features.time_of_day),
                config.profile.top_k,
                config.profile.outcome_keys,
                config.risk.recent,
                int(bool(self._track)),
                builder.mask,
                0,
            ],
            dtype=np.int64,
        )
        self.task_delayed = np.array([t.label.kind == "delayed" for t in self.tasks], np.bool_)
        self.task_by_item = np.array([t.label.key == "item" for t in self.tasks], np.bool_)
        self.task_threshold = np.array([t.label.threshold for t in self.tasks], np.float64)
        self.task_has_pos = np.array([bool(t.label.positive) for t in self.tasks], np.bool_)
        self.task_window = np.array(
            [t.label.window_s if t.label.kind == "delayed" else 0.0 for t in self.tasks]
        )
        # the item statistics, by item code, kept across batches while this owns the state
        self.xf = np.zeros((0, 4))
        self.xi = np.zeros((0, 4), np.int64)
        self.xpos = np.zeros((0, nt), np.int64)
        self.xex = np.zeros((0, nt), np.int64)
        self.x_first = np.zeros((0, 2, nt), np.int64)
        self.x_touched = np.zeros(0, np.bool_)
        self.x_held = np.zeros(0, np.bool_)
        self.held_items: set[str] = set()
        self.topic_strings, self.task_strings = StringTable(), StringTable()
        self.task_strings.extend(self.names)
        #: the users of the last batch, by row, and their rows as its step left them
        self._last_users: tuple[dict[str, int], _UserRows | None] = ({}, None)
        # the pending examples
        self.owner: PipelineState | None = None
        self._new_pool(64, 64)

    # -- codes and tables ----------------------------------------------------------------------

    def _intern(
        self, users: list[str], items: list[str], topics: list[str], kinds: list[str]
    ) -> None:
        b = self.features
        new = self.users.add_missing(users)
        if new:
            n = len(self.users)
            self.user_fidx = _grow(self.user_fidx, n)
            self.user_part = _grow(self.user_part, n)
            for v in new:
                c = self.users.code[v]
                self.user_fidx[c] = b.value_index("user", v)
                self.user_part[c] = b.part(v)
        new = self.items.add_missing(items)
        if new:
            n = len(self.items)
            self.item_fidx = _grow(self.item_fidx, n)
            self.item_crc = _grow(self.item_crc, n)
            for name in ("xf", "xi", "xpos", "xex", "x_first", "x_touched", "x_held"):
                setattr(self, name, _grow(getattr(self, name), n))
            if self.task_by_item.any():
                self.ko_item = _grow(self.ko_item.T, n).T.copy()
            for v in new:
                c = self.items.code[v]
                self.item_fidx[c] = b.value_index("item", v)
                self.item_crc[c] = velocity_item(v)
                for t, task in enumerate(self.tasks):
                    if self.task_by_item[t]:
                        self.ko_item[t, c] = key_outcome_name(task.name, v)
        new = self.topics.add_missing(topics)
        if new:
            n = len(self.topics)
            self.topic_fidx = _grow(self.topic_fidx, n)
            self.topic_part = _grow(self.topic_part, n)
            self.topic_track = _grow(self.topic_track, n)
            self.ko_topic = _grow(self.ko_topic.T, n).T.copy()
            self.topic_strings.extend(new)
            for v in new:
                c = self.topics.code[v]
                self.topic_fidx[c] = b.value_index("topic", v)
                self.topic_part[c] = b.part(v)
                self.topic_track[c] = v in self._track
                for t, task in enumerate(self.tasks):
                    if not self.task_by_item[t]:
                        self.ko_topic[t, c] = key_outcome_name(task.name, v)
        if self.types.add_missing(kinds) or not self.type_tables:
            self._type_tables()

    def _type_tables(self) -> None:
        b, config = self.features, self.base.config
        names = self.types.names
        n = max(len(names), 1)
        weights = dict(config.profile.weights)
        monetary = frozenset(config.profile.monetary_types)
        on = np.zeros((len(self.tasks), n), np.bool_)
        conv = np.zeros((len(self.tasks), n), np.bool_)
        pos = np.zeros((len(self.tasks), n), np.bool_)
        for t, task in enumerate(self.tasks):
            for c, kind in enumerate(names):
                on[t, c] = kind in task.on
                conv[t, c] = kind in task.label.conversion
                pos[t, c] = kind in task.label.positive
        self.type_tables = (
            np.array([b.value_index("type", k) for k in names] or [0], np.int64),
            np.array([b.value_index("decayed", k) for k in names] or [0], np.int64),
            np.array([k in monetary for k in names] or [False], np.bool_),
            np.array(
                [weights.get(k, config.profile.default_weight) for k in names] or [0.0], np.float64
            ),
            on,
            conv,
            pos,
        )

    # -- pending examples ----------------------------------------------------------------------

    def _new_pool(self, cap: int, width: int) -> None:
        nt = len(self.tasks)
        self.pd_task = np.zeros(cap, np.int64)
        self.pd_user = np.zeros(cap, np.int64)
        self.pd_key = np.zeros(cap, np.int64)
        self.pd_item = np.zeros(cap, np.int64)
        self.pd_open = np.zeros(cap, np.float64)
        self.pd_dl = np.zeros(cap, np.float64)
        self.pd_p = np.full(cap, np.nan)
        self.pd_conv = np.zeros(cap, np.bool_)
        self.pd_flen = np.zeros(cap, np.int64)
        self.pd_fidx = np.zeros((cap, width), np.int64)
        self.pd_fval = np.zeros((cap, width), np.float64)
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        self.nfree = np.array([cap], np.int64)
        self.heap = np.zeros((nt, cap), np.int64)
        self.hlen = np.zeros(nt, np.int64)
        self.waiting = TypedDict.empty(key_type=nbtypes.int64, value_type=nbtypes.int64)

    def _reserve(self, slots: int, width: int) -> None:
        """Room for ``slots`` more pending examples of up to ``width`` features."""
        cap = self.pd_task.shape[0]
        if self.nfree[0] >= slots and self.pd_fidx.shape[1] >= width:
            return
        new_cap = max(cap, cap - int(self.nfree[0]) + slots)
        if new_cap > cap:
            new_cap = max(new_cap, 2 * cap)
        for name in (
            "pd_task",
            "pd_user",
            "pd_key",
            "pd_item",
            "pd_open",
            "pd_dl",
            "pd_conv",
            "pd_flen",
        ):
            setattr(self, name, _grow(getattr(self, name), new_cap))
        self.pd_p = _grow(self.pd_p, new_cap, np.nan)
        w = max(width, self.pd_fidx.shape[1])
        for name in ("pd_fidx", "pd_fval"):
            old = getattr(self, name)
            new = np.zeros((new_cap, w), old.dtype)
            new[:cap, : old.shape[1]] = old
            setattr(self, name, new)
        if new_cap > cap:
            heap = np.zeros((len(self.tasks), new_cap), np.int64)
            heap[:, :cap] = self.heap
            self.heap = heap
            added = np.arange(new_cap - 1, cap - 1, -1, dtype=np.int64)
            free = np.concatenate([added, self.free[: self.nfree[0]]])
            self.free = np.zeros(new_cap, np.int64)
            self.free[: len(free)] = free
            self.nfree[0] = len(free)

    def _adopt(self, state: PipelineState) -> None:
        """Take over the open pending examples of ``state``'s tasks."""
        self.owner = state
        self._new_pool(64, 64)
        taken = {
            t: state.tasks[name].take_pending()
            for t, name in enumerate(self.names)
            if self.task_delayed[t]
        }
        pendings = [(t, p) for t, (open_, _) in taken.items() for p in open_]
        width = max((len(p.idx) // 8 for _, p in pendings), default=0)
        self._reserve(len(pendings), width)
        self._intern(
            [p.user for _, p in pendings],
            [p.item for _, p in pendings if p.item is not None]
            + [p.key for t, p in pendings if self.task_by_item[t]],
            [p.key for t, p in pendings if not self.task_by_item[t]],
            [],
        )
        slots: dict[int, int] = {}
        for t, p in pendings:
            slot = self._take_slot()
            slots[id(p)] = slot
            self._fill_slot(slot, t, p)
        for t, (open_, waiting) in taken.items():
            for (user, key), p in waiting.items():
                self.waiting[self._wkey(t, user, key)] = slots[id(p)]
            live = np.array([slots[id(p)] for p in open_], np.int64)
            K.push_all(
                self.heap,
                self.hlen,
                t,
                live,
                self.pd_dl,
                self.pd_open,
                self.pd_user,
                self.pd_key,
                self.users.rank(),
                self._key_rank(t),
            )

    def _take_slot(self) -> int:
        self.nfree[0] -= 1
        return int(self.free[self.nfree[0]])

    def _fill_slot(self, slot: int, t: int, p: Pending) -> None:
        idx = np.frombuffer(p.idx, dtype=np.int64)
        self.pd_task[slot] = t
        self.pd_user[slot] = self.users.code[p.user]
        self.pd_key[slot] = self._keys(t).code[p.key]
        self.pd_item[slot] = -1 if p.item is None else self.items.code[p.item]
        self.pd_open[slot] = p.open_ts
        self.pd_dl[slot] = p.deadline
        self.pd_p[slot] = p.p
        self.pd_conv[slot] = p.converted
        self.pd_flen[slot] = len(idx)
        self.pd_fidx[slot, : len(idx)] = idx
        self.pd_fval[slot, : len(idx)] = np.frombuffer(p.val, dtype=np.float64)

    def _wkey(self, t: int, user: str, key: str) -> int:
        keys = self._keys(t)
        return (self.users.code[user] * len(self.tasks) + t) * L.KEYSPACE + keys.code[key]

    def _keys(self, t: int) -> _Codes:
        """The codes of task ``t``'s keys: items or topics."""
        return self.items if self.task_by_item[t] else self.topics

    def _key_rank(self, t: int) -> I64:
        return self._keys(t).rank()

    def _pendings(self, slots: I64) -> list[Pending]:
        """The pending examples in ``slots`` (all of one task) as :class:`Pending` objects."""
        if not len(slots):
            return []
        t = int(self.pd_task[slots[0]])
        keys = self._keys(t).names
        users, items = self.users.names, self.items.names
        flen = self.pd_flen[slots].tolist()
        width = self.pd_fidx.shape[1]
        fidx = memoryview(self.pd_fidx[slots].tobytes())
        fval = memoryview(self.pd_fval[slots].tobytes())
        out = []
        for j, (u, k, it, o, d, p, c, m) in enumerate(
            zip(
                self.pd_user[slots].tolist(),
                self.pd_key[slots].tolist(),
                self.pd_item[slots].tolist(),
                self.pd_open[slots].tolist(),
                self.pd_dl[slots].tolist(),
                self.pd_p[slots].tolist(),
                self.pd_conv[slots].tolist(),
                flen,
                strict=True,
            )
        ):
            a = 8 * j * width
            out.append(
                Pending(
                    users[u],
                    keys[k],
                    None if it < 0 else items[it],
                    o,
                    d,
                    bytes(fidx[a : a + 8 * m]),
                    bytes(fval[a : a + 8 * m]),
                    p,
                    c,
                )
            )
        return out

    def _columns(self, t: int, made: I64, converted: I64) -> PendingColumns:
        """The pending log of task ``t``: the examples in slots ``made``, the conversions of
        those in slots ``converted``."""
        user, key, item = self.pd_user, self.pd_key, self.pd_item
        spaces = (self.users, self._keys(t), self.items)
        codes = (
            np.concatenate((user[made], user[converted])),
            np.concatenate((key[made], key[converted])),
            item[made][item[made] >= 0],
        )
        uniq = [np.unique(c) for c in codes]
        strings = [[sp.names[c] for c in u.tolist()] for sp, u in zip(spaces, uniq, strict=True)]
        names = sorted(set().union(*strings))
        at = {name: j for j, name in enumerate(names)}
        position = [np.array([at[v] for v in group], np.int32) for group in strings]

        def refs(space: int, of: I64) -> bytes:
            out = np.full(len(of), -1, np.int32)
            known = of >= 0
            out[known] = position[space][np.searchsorted(uniq[space], of[known])]
            return out.tobytes()

        flen = self.pd_flen[made]
        fidx, fval = _gather(made, flen, self.pd_fidx, self.pd_fval)
        return PendingColumns(
            names,
            refs(0, user[made]),
            refs(1, key[made]),
            refs(2, item[made]),
            self.pd_open[made].tobytes(),
            self.pd_dl[made].tobytes(),
            self.pd_p[made].tobytes(),
            self.pd_conv[made].tobytes(),
            flen.astype(np.uint32).tobytes(),
            fidx.tobytes(),
            *split_ones(fval),
            refs(0, user[converted]),
            refs(1, key[converted]),
            self.pd_open[converted].tobytes(),
        )

    def release(self) -> None:
        """Hand the open pending examples back to the owner's tasks (before a Python step)."""
        state = self.owner
        if state is None:
            return
        for t, name in enumerate(self.names):
            if not self.task_delayed[t]:
                continue
            live = self.heap[t, : self.hlen[t]]
            by_slot = dict(zip(live.tolist(), self._pendings(live), strict=True))
            waiting = [
                by_slot[slot]
                for wkey, slot in self.waiting.items()
                if wkey // L.KEYSPACE % len(self.tasks) == t and slot in by_slot
            ]
            state.tasks[name].give_pending(list(by_slot.values()), waiting)
        # the item statistics are in the store (and the state's resting copies) as committed
        self.x_held[:] = False
        self.held_items.clear()
        self._last_users = ({}, None)
        self.owner = None

    def due_keys(self, state: PipelineState, horizon: float) -> tuple[set[str], set[str]]:
        """Users and items of the pending examples that close before ``horizon``."""
        if self.owner is not state:
            return set(), set()
        users: set[str] = set()
        items: set[str] = set()
        for t in range(len(self.tasks)):
            live = self.heap[t, : self.hlen[t]]
            due = live[self.pd_dl[live] < horizon]
            users.update(self.users.names[c] for c in np.unique(self.pd_user[due]))
            items.update(self.items.names[c] for c in np.unique(self.pd_item[due]) if c >= 0)
        return users, items

    # -- the step ------------------------------------------------------------------------------

    @staticmethod
    def accepts(state: PipelineState, events: Sequence[Event]) -> bool:
        """Whether this batch can take the compiled path."""
        if state.checkpoint.links:
            return False
        if isinstance(events, EventColumns):  # plain events only
            return True
        return not any(e.anonymous_id is not None or e.type == FORGET for e in events)

    def step(self, state: PipelineState, events: Sequence[Event]) -> StepResult:
        if self.owner is not state:
            if self.owner is not None:
                self.release()
            self._adopt(state)
        out = StepResult()
        ckpt = state.checkpoint
        cols = EventColumns.of(events)
        n = len(cols)
        ok_list = state.dedup.add_many(cols.event_id)
        ev_ok = np.array(ok_list, dtype=np.bool_)
        out.duplicates = n - int(ev_ok.sum())
        user_names, item_names, kind_names = cols.user, cols.item_id, cols.type
        cats = cols.category
        flat_topics, topic_starts = cols.topics()
        present_items = [i for i in item_names if i is not None]
        # the pending examples due in this batch bring their users and items
        horizon = self.base.horizon(state, cols)
        due_users, due_items = self.due_keys(state, horizon)
        profiles = state.profiles
        batch_users = list(dict.fromkeys([*user_names, *sorted(due_users)]))
        batch_items = list(dict.fromkeys([*present_items, *sorted(due_items)]))
        # strings the stored profiles hold: items and kinds of recent events, kinds, interests
        recent_items: list[str] = []
        stored_kinds: list[str] = []
        interest_keys: list[str] = []
        for u in batch_users:
            p = profiles.get(u)
            if p is None:
                continue
            for _, kind, item, _ in p.recent:
                stored_kinds.append(kind)
                if item is not None:
                    recent_items.append(item)
            stored_kinds.extend(p.decayed)
            interest_keys.extend(p.interests)
        self._intern(
            batch_users,
            [*batch_items, *recent_items],
            [*flat_topics, *(c for c in cats if c is not None), *interest_keys],
            [*kind_names, *stored_kinds],
        )
        ucode, icode, tcode = self.users.code, self.items.code, self.topics.code
        ev_ucode = np.fromiter(map(ucode.__getitem__, user_names), np.int64, n)
        ev_icode = np.array([-1 if i is None else icode[i] for i in item_names], np.int64)
        ev_type = np.fromiter(map(self.types.code.__getitem__, kind_names), np.int64, n)
        ev_cat = np.array([-1 if c is None else tcode[c] for c in cats], np.int64)
        ev_ts, ev_val = cols.ts, cols.value
        tp_start = np.array(topic_starts, np.int64)
        tp_code = np.fromiter(map(tcode.__getitem__, flat_topics), np.int64, len(flat_topics))
        # local rows of the users and items
        u_codes = np.fromiter(map(ucode.__getitem__, batch_users), np.int64, len(batch_users))
        i_codes = np.fromiter(map(icode.__getitem__, batch_items), np.int64, len(batch_items))
        urow_of = np.full(len(self.users), -1, np.int64)
        urow_of[u_codes] = np.arange(len(u_codes))
        ev_urow = urow_of[ev_ucode]
        U = self._load_users(state, batch_users)
        self._hold_items(state, batch_items, i_codes)
        # items keep their rows (their codes) across batches; -1: not held
        irow_of = np.where(self.x_held[: len(self.items)], np.arange(len(self.items)), -1)
        X = self.xf, self.xi, self.xpos, self.xex, self.x_first, self.x_touched
        before: dict[str, Standing | None] = {}
        for u in dict.fromkeys(user_names[k] for k in np.flatnonzero(ev_ok).tolist()):
            p = profiles.get(u)
            before[u] = None if p is None else standing(p)
        # room for what this batch may open, and for its model operations and records
        nt = len(self.tasks)
        n_types = len(self.types)
        max_topics = int(np.diff(tp_start).max()) if n else 0
        width = 48 + 2 * max_topics + n_types
        self._reserve(n * int(self.task_delayed.sum()), width)
        width = self.pd_fidx.shape[1]
        live = int(self.hlen.sum())
        max_ops = 2 * n + live + 1
        op_kind = np.zeros((nt, max_ops), np.int8)
        op_start = np.zeros((nt, max_ops + 1), np.int64)
        op_idx = np.empty((nt, max_ops * width), np.int64)
        op_val = np.empty((nt, max_ops * width), np.float64)
        op_y = np.zeros((nt, max_ops), np.float64)
        n_ops = np.zeros(nt, np.int64)
        max_rec = nt * (2 * n) + live + 1
        recs = np.zeros((max_rec, 4), np.int64)  # kind, task, operation, user row or slot
        rec_ts = np.zeros(max_rec, np.float64)
        rec_label = np.zeros(max_rec, np.bool_)
        created = np.zeros((nt, n + 1), np.int64)
        n_created = np.zeros(nt, np.int64)
        converted = np.zeros((nt, n + 1), np.int64)
        n_converted = np.zeros(nt, np.int64)
        freed = np.zeros(nt * n + live + 1, np.int64)
        res = np.zeros(4, np.int64)
        self.fp[L.FP_WATERMARK] = ckpt.watermark
        type_fidx, type_dec, type_mon, type_w, on, conv, pos = self.type_tables
        item_rank = self.items.rank()
        # as the profiles were before the events, for the velocity counts below
        last_before, n_before = U.pf[:, L.P_LAST].tolist(), U.pi[:, L.P_N].tolist()
        K.run(
            ev_ok,
            ev_urow,
            ev_ucode,
            ev_icode,
            ev_icode,
            ev_type,
            ev_ts,
            ev_val,
            ev_cat,
            tp_start,
            tp_code,
            self.user_fidx,
            self.user_part,
            self.users.rank(),
            self.item_fidx,
            self.topic_fidx,
            self.topic_part,
            self.topic_track,
            type_fidx,
            type_dec,
            type_mon,
            type_w,
            self.types.rank(),
            item_rank,
            self.task_delayed,
            on,
            conv,
            pos,
            self.task_has_pos,
            self.task_threshold,
            self.task_by_item,
            self.task_window,
            self.ko_topic,
            self.ko_item,
            self.topics.rank(),
            item_rank,
            self.fc,
            self.tabs,
            self.tab_last,
            self.fp,
            self.ip,
            *U,
            *X,
            urow_of,
            irow_of,
            self.waiting,
            self.pd_task,
            self.pd_user,
            self.pd_key,
            self.pd_item,
            self.pd_open,
            self.pd_dl,
            self.pd_conv,
            self.pd_flen,
            self.pd_fidx,
            self.pd_fval,
            self.free,
            self.nfree,
            self.heap,
            self.hlen,
            op_kind,
            op_start,
            op_idx,
            op_val,
            op_y,
            n_ops,
            recs,
            rec_ts,
            rec_label,
            created,
            n_created,
            converted,
            n_converted,
            freed,
            res,
        )
        applied, out.examples, n_rec, n_freed = (int(x) for x in res)
        out.applied = applied
        watermark = float(self.fp[L.FP_WATERMARK])
        # the models, then predictions back to metrics, scores and pending examples
        preds = []
        for t, name in enumerate(self.names):
            task = state.tasks[name]
            k = int(n_ops[t])
            ops = _Ops(
                op_kind[t, :k],
                op_start[t, : k + 1],
                op_idx[t, : op_start[t, k]],
                op_val[t, : op_start[t, k]],
                op_y[t, :k],
            )
            assert task.learner is not None
            preds.append(run_ops(task.learner, ops) if k else np.zeros(0))
        rec_kind, rec_task, rec_k, rec_ref = recs[:n_rec].T
        rec_ts, rec_label = rec_ts[:n_rec], rec_label[:n_rec]
        p_rec = np.full(n_rec, np.nan)
        for t in range(nt):
            m = (rec_task == t) & (rec_kind != L.R_RESOLVED)
            p_rec[m] = preds[t][rec_k[m]]
        opened = rec_kind == L.R_OPENED
        self.pd_p[rec_ref[opened]] = p_rec[opened]
        resolved = rec_kind == L.R_RESOLVED
        p_rec[resolved] = self.pd_p[rec_ref[resolved]]
        score_rows = np.where(opened, urow_of[self.pd_user[np.where(opened, rec_ref, 0)]], rec_ref)
        scores = np.full((len(batch_users), nt), np.nan)
        scored = np.full((len(batch_users), nt), -1, np.int64)
        for t, name in enumerate(self.names):
            at = np.flatnonzero((rec_task == t) & ~resolved)
            rows = score_rows[at]
            # each user's last score of the task is kept, its first one orders new keys
            rows_r = rows[::-1]
            uniq, last = np.unique(rows_r, return_index=True)
            scores[uniq, t] = p_rec[at[::-1][last]]
            uniq, firsts = np.unique(rows, return_index=True)
            scored[uniq, t] = at[firsts]
            learned = (rec_task == t) & (rec_kind != L.R_OPENED)
            state.tasks[name].metrics.record_many(
                p_rec[learned], rec_label[learned], rec_ts[learned]
            )
        # profiles, items and pending logs back to objects
        out.users = self._store_users(state, batch_users, U, scores, scored)
        if self.base.config.risk.velocity:
            velocity = (ev_urow, ev_icode, ev_type, ev_ts, last_before, n_before)
            self._count_velocity(state, ev_ok, user_names, *velocity)
        touched = np.flatnonzero(self.x_touched)
        self.x_touched[touched] = False
        counts = np.stack((self.xex[touched], self.xpos[touched]), axis=1)  # as layout.COUNTS
        blobs = encode_items(
            np.arange(len(touched)),
            self.xf[touched],
            self.xi[touched],
            counts,
            self.x_first[touched],
            self.topic_strings,
            self.task_strings,
        )
        names = self.items.names
        out.item_rows = dict(zip([names[c] for c in touched.tolist()], blobs, strict=True))
        for t, name in enumerate(self.names):
            if self.task_delayed[t]:
                out.pending[name] = self._columns(
                    t, created[t, : n_created[t]], converted[t, : n_converted[t]]
                )
            else:
                out.pending[name] = PendingLog([], [])
        back = freed[:n_freed]
        self.free[self.nfree[0] : self.nfree[0] + n_freed] = back
        self.nfree[0] += n_freed
        swept = self.base.sweep_due(ckpt.watermark, watermark)
        ckpt.watermark = watermark
        ckpt.events += out.applied
        ckpt.duplicates += out.duplicates
        self.base.finish(state, out, before, swept)
        return out

    def _count_velocity(
        self,
        state: PipelineState,
        ev_ok: Any,
        user_names: Sequence[str],
        ev_urow: I64,
        ev_icode: I64,
        ev_type: I64,
        ev_ts: F64,
        last: list[float],
        n: list[int],
    ) -> None:
        """The velocity counts of the applied events, in their order, on the profiles (as
        ``RiskTracker.apply`` counts them); ``last`` and ``n``: last event time and event count
        per user row before the batch."""
        count, profiles = self.updater.risk.count, state.profiles
        monetary = self.type_tables[2].tolist()
        applied = np.flatnonzero(ev_ok)
        rows = ev_urow[applied].tolist()
        items = ev_icode[applied]
        crc = np.append(self.item_crc[: len(self.items)], -1)[items].tolist()  # -1: no item
        kinds = ev_type[applied].tolist()
        for e, r, ts, kind, item in zip(
            applied.tolist(), rows, ev_ts[applied].tolist(), kinds, crc, strict=True
        ):
            if n[r] == 0 or ts > last[r]:
                last[r] = ts
            n[r] += 1
            count(profiles[user_names[e]], ts, monetary[kind], None if item < 0 else item, last[r])

    # -- profiles and items as arrays ----------------------------------------------------------

    def _load_users(self, state: PipelineState, users: list[str]) -> _UserRows:
        U = _UserRows.empty(
            len(users),
            max(len(self.types), 1),
            len(self.tasks),
            int(self.ip[L.IP_TOP_K]),
            int(self.ip[L.IP_KEY_ROOM]),
            int(self.ip[L.IP_RECENT]),
        )
        profiles = state.profiles
        tcode, kcode, icode = self.topics.code, self.types.code, self.items.code
        names = self.names
        # the users of the previous batch are in its rows as its step left them
        last_rows, last = self._last_users
        again, before = [], []
        for r, user in enumerate(users):
            j = last_rows.get(user)
            if j is not None:
                again.append(r)
                before.append(j)
                continue
            p = profiles.get(user)
            if p is None:
                continue
            U.pf[r] = (
                p.anchor,
                p.first_ts,
                p.last_ts,
                p.monetary,
                np.nan if p.last_purchase_ts is None else p.last_purchase_ts,
                p.value_sum,
            )
            U.pi[r] = (p.n, p.purchases, p.value_n, 1)
            for j, (kind, v) in enumerate(p.decayed.items()):
                c = kcode[kind]
                U.dec[r, c] = v
                U.tord[r, j] = c
            U.tlen[r] = len(p.decayed)
            for kind, c in p.counts.items():
                U.cnt[r, kcode[kind]] = c
            m = len(p.interests)
            if m:
                U.ik[r, :m] = [tcode[k] for k in p.interests]
                U.iv[r, :m] = list(p.interests.values())
                U.il[r] = m
            m = len(p.key_outcomes)
            if m:
                U.okey[r, :m] = list(p.key_outcomes)
                U.oval[r, :m] = list(p.key_outcomes.values())
                U.olen[r] = m
            m = len(p.spend)
            if m:
                U.sday[r, :m] = list(p.spend)
                U.scents[r, :m] = list(p.spend.values())
                U.slen[r] = m
            m = len(p.recent)
            for j, (ts, kind, item, value) in enumerate(p.recent):
                U.rts[r, j] = ts
                U.rty[r, j] = kcode[kind]
                U.rit[r, j] = -1 if item is None else icode[item]
                U.rva[r, j] = np.nan if value is None else value
            U.rlen[r] = m
            for t, name in enumerate(names):
                U.upos[r, t] = p.positives.get(name, 0)
                U.uex[r, t] = p.examples.get(name, 0)
        if again:
            for field in _UserRows._fields:
                if field in ("first", "touched"):  # per batch
                    continue
                new, old = getattr(U, field), getattr(last, field)
                if new.ndim == 1:
                    new[again] = old[before]
                else:  # event types may have been added since
                    w = min(new.shape[1], old.shape[1])
                    new[again, :w] = old[before, :w]
        self._last_users = {user: r for r, user in enumerate(users)}, U
        return U

    def _store_users(
        self,
        state: PipelineState,
        users: list[str],
        U: _UserRows,
        scores: F64,
        scored: I64,
    ) -> set[str]:
        profiles = state.profiles
        kinds, topics, items, names = (
            self.types.names,
            self.topics.names,
            self.items.names,
            self.names,
        )
        out: set[str] = set()
        pf_l, pi_l = U.pf.tolist(), U.pi.tolist()
        for r in np.flatnonzero(U.touched).tolist():
            user = users[r]
            out.add(user)
            p = profiles.get(user)
            f, i = pf_l[r], pi_l[r]
            if p is None:
                p = profiles[user] = Profile(user=user, anchor=f[0], first_ts=f[1], last_ts=f[2])
            p.anchor, p.first_ts, p.last_ts, p.monetary = f[0], f[1], f[2], f[3]
            p.last_purchase_ts = None if f[4] != f[4] else f[4]
            p.value_sum = f[5]
            p.n, p.purchases, p.value_n = i[0], i[1], i[2]
            order = U.tord[r, : U.tlen[r]].tolist()
            p.counts = {kinds[c]: int(U.cnt[r, c]) for c in order}
            p.decayed = {kinds[c]: float(U.dec[r, c]) for c in order}
            m = int(U.il[r])
            p.interests = dict(
                zip([topics[c] for c in U.ik[r, :m].tolist()], U.iv[r, :m].tolist(), strict=True)
            )
            m = int(U.olen[r])
            p.key_outcomes = dict(zip(U.okey[r, :m].tolist(), U.oval[r, :m].tolist(), strict=True))
            m = int(U.slen[r])
            p.spend = dict(zip(U.sday[r, :m].tolist(), U.scents[r, :m].tolist(), strict=True))
            m = int(U.rlen[r])
            p.recent = [
                (stamp(ts), kinds[ty], None if it < 0 else items[it], None if va != va else va)
                for ts, ty, it, va in zip(
                    U.rts[r, :m].tolist(),
                    U.rty[r, :m].tolist(),
                    U.rit[r, :m].tolist(),
                    U.rva[r, :m].tolist(),
                    strict=True,
                )
            ]
            ticks = U.first[r]
            p.examples = _counted(p.examples, names, U.uex[r].tolist(), ticks[0])
            p.positives = _counted(p.positives, names, U.upos[r].tolist(), ticks[1])
            p.scores = _counted(p.scores, names, scores[r].tolist(), scored[r])
        return out

    def _hold_items(self, state: PipelineState, items: list[str], codes: I64) -> None:
        """Bring the statistics of ``items`` (codes ``codes``) not held yet into the item arrays,
        from ``state.items`` (loaded from the store) or as new items."""
        new = np.flatnonzero(~self.x_held[codes])
        if not len(new):
            return
        rows = codes[new]
        self.xf[rows] = 0.0
        self.xi[rows] = 0
        self.xi[rows, L.I_CAT] = -1
        self.xpos[rows] = 0
        self.xex[rows] = 0
        self.x_first[rows] = -1
        self.x_held[rows] = True
        stats, names = state.items, self.names
        held = [items[j] for j in new.tolist()]
        self.held_items.update(held)
        for r, item in zip(rows.tolist(), held, strict=True):
            s = stats.get(item)
            if s is None:
                continue
            if s.category is not None and s.category not in self.topics.code:
                self._intern([], [], [s.category], [])
            self.xf[r] = [getattr(s, f) for f in ITEM_FLOATS]
            category = -1 if s.category is None else self.topics.code[s.category]
            self.xi[r] = (s.n, s.value_n, category, 1)
            for d, counts in ((0, s.examples), (1, s.positives)):
                for j, name in enumerate(counts):
                    t = names.index(name)
                    self.x_first[r, d, t] = j - len(counts)  # before this run's ticks, in order
            for t, name in enumerate(names):
                self.xpos[r, t] = s.positives.get(name, 0)
                self.xex[r, t] = s.examples.get(name, 0)


def _counted(old: dict[str, Any], names: list[str], values: list[Any], ticks: Any) -> Any:
    """``old`` with the tasks' new values (0 or NaN: none), keys in the order a dict updated event
    by event would have: old keys where they were, new ones in the order they first got a value."""
    fresh = []
    new = old
    for t, name in enumerate(names):
        v = values[t]
        if v and v == v:
            if name in old:
                if old[name] != v:
                    if new is old:
                        new = dict(old)
                    new[name] = v
            else:
                fresh.append((int(ticks[t]), name, v))
    if fresh:
        new = dict(new)
        for _, name, v in sorted(fresh):
            new[name] = v
    return new


class _UserRows(NamedTuple):
    """The profiles of a batch as arrays, one row per user (the kernel's profile arguments)."""

    pf: Any  # floats: kernel.P_ANCHOR ... P_VSUM
    pi: Any  # ints: kernel.P_N ... P_EXISTS
    cnt: Any  # counts per event type
    dec: Any  # decayed counts per event type
    tord: Any  # event types in the order the profile first saw them
    tlen: Any
    ik: Any  # interest keys (topic codes) and values, in insertion order
    iv: Any
    il: Any
    okey: Any  # key outcomes: names and packed counts, in insertion order
    oval: Any
    olen: Any
    sday: Any  # spend: days and cents, in insertion order
    scents: Any
    slen: Any
    rts: Any  # recent events: time, type code, item code (-1: none), value (NaN: none)
    rty: Any
    rit: Any
    rva: Any
    rlen: Any
    upos: Any  # positives and examples per task
    uex: Any
    first: Any  # when each task's example and positive counts first became non-zero
    touched: Any

    @classmethod
    def empty(cls, n: int, types: int, tasks: int, top_k: int, room: int, recent: int) -> _UserRows:
        interests, keys = max(top_k, 1) + 8, room + room // 4 + 2
        pf = np.zeros((n, 6))
        pf[:, L.P_LASTPUR] = np.nan
        return cls(
            pf,
            np.zeros((n, 4), np.int64),
            np.zeros((n, types), np.int64),
            np.zeros((n, types)),
            np.zeros((n, types), np.int64),
            np.zeros(n, np.int64),
            np.zeros((n, interests), np.int64),
            np.zeros((n, interests)),
            np.zeros(n, np.int64),
            np.zeros((n, keys), np.int64),
            np.zeros((n, keys), np.int64),
            np.zeros(n, np.int64),
            np.zeros((n, SPEND_ROOM), np.int64),
            np.zeros((n, SPEND_ROOM), np.int64),
            np.zeros(n, np.int64),
            np.zeros((n, recent + 1)),
            np.zeros((n, recent + 1), np.int64),
            np.zeros((n, recent + 1), np.int64),
            np.zeros((n, recent + 1)),
            np.zeros(n, np.int64),
            np.zeros((n, tasks), np.int64),
            np.zeros((n, tasks), np.int64),
            np.full((n, 2, tasks), -1, np.int64),
            np.zeros(n, np.bool_),
        )


class _Ops:
    """A batch of model operations as arrays (the interface of ``OpBatch`` learners use)."""

    def __init__(self, kinds: Any, starts: Any, idx: Any, val: Any, ys: Any) -> None:
        self.kinds, self.starts, self.idx, self.val, self.ys = kinds, starts, idx, val, ys

    def __len__(self) -> int:
        return len(self.kinds)

    def arrays(self) -> OpArrays:
        return self.kinds, self.starts, self.idx, self.val, self.ys

    def example(self, k: int) -> dict[Hashable, float]:
        s, e = int(self.starts[k]), int(self.starts[k + 1])
        return sparse_example(self.idx[s:e].tolist(), self.val[s:e].tolist(), 0, e - s)


@numba.njit(cache=True, nogil=True)
def _gather(slots, flen, pd_fidx, pd_fval):  # type: ignore[no-untyped-def]
    """The features of the pending examples in ``slots``, concatenated (indices as uint32)."""
    fidx = np.empty(flen.sum(), np.uint32)
    fval = np.empty(flen.sum(), np.float64)
    m = 0
    for j in range(slots.shape[0]):
        s = slots[j]
        for q in range(flen[j]):
            fidx[m] = pd_fidx[s, q]
            fval[m] = pd_fval[s, q]
            m += 1
    return fidx, fval

"""The processing step in Python: (state, batch of events) -> (new state, outputs).

No I/O, clocks or globals: the step reads and changes only the :class:`PipelineState` it is given,
and every decision follows event time. For each event, in order: de-duplicate, advance the
watermark and close the pending examples it makes due, predict (with features from the profile
*before* the event), resolve conversions, open exposures, then update the profile and item
statistics. Model operations are collected per task and run once per batch, in the same order,
which gives the same models and predictions as running them one by one.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.events import Event
>>> step = PythonStep(PipelineConfig())
>>> state = step.new_state()
>>> out = step.step(state, [Event("e1", "u1", "rate", 0.0, item_id="m1", value=4.5),
...                         Event("e1", "u1", "rate", 0.0, item_id="m1", value=4.5)])
>>> out.applied, out.duplicates, sorted(out.users), state.tasks["like"].metrics.n
(1, 1, ['u1'], 1)
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from operator import attrgetter
from typing import cast

import msgspec

from liveprofile.config import PipelineConfig
from liveprofile.engine.layout import R_IMMEDIATE, R_OPENED, R_RESOLVED
from liveprofile.engine.lazyprofiles import peek, update_traits
from liveprofile.engine.lifecycle import Lifecycle, StepResult
from liveprofile.engine.state import PipelineState, scores_in_task_order
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import FORGET, MERGE, Event
from liveprofile.features.hashing import FeatureBuilder
from liveprofile.learn.base import LEARN, PREDICT_LEARN, run_ops
from liveprofile.learn.examples import ExampleLog
from liveprofile.learn.regression import RegressionMetrics, run_regression_ops
from liveprofile.learn.tasks import Pending, TaskState
from liveprofile.profile.decay import forward_weight, needs_rebase, rebase_factor
from liveprofile.profile.items import ItemStats
from liveprofile.profile.population import Standing, standing
from liveprofile.profile.segments import SegmentRules, diff
from liveprofile.profile.state import Profile, ProfileUpdater
from liveprofile.profile.traits import TraitEvaluator

#: (kind, task, position in the task's operations, user or pending example, event time, label)
_Record = tuple[int, TaskState, int, str | Pending, float, bool]
#: a profile folded into another in a batch: that profile, and the tasks it had scores for then
#: where a folded profile went, the tasks the profile it went into had a score of, and the folded
#: profile itself (held, so that its id is not reused by a profile made later in the batch)
_Fold = tuple[Profile, frozenset[str], Profile]


_TS, _USER, _ANON, _ITEM = (attrgetter(a) for a in ("ts", "user", "anonymous_id", "item_id"))


class PythonStep(Lifecycle):
    """The processing step of a pipeline in Python: the readable reference, and the engine of
    the batches and pipelines the compiled step (:mod:`liveprofile.engine.compiled`) does not
    take. :class:`liveprofile.engine.core.Core` chooses between the two."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.updater = ProfileUpdater(config.profile, config.risk)
        self.features = FeatureBuilder(config.features, self.updater)
        self.traits = TraitEvaluator(config.traits, self.updater) if config.traits else None
        self.segments = SegmentRules(config.segments, self.updater) if config.segments else None
        self._sweep_s = config.run.segment_sweep_s
        #: users inactive for longer than this (event time) expire; None: never
        self.ttl = config.run.profile_ttl_s
        self._h_items = self.updater.h_counters
        self._key_room = config.profile.outcome_keys
        #: keep the learned examples of each batch (``run.training_log``)
        self.log_examples = bool(config.run.training_log)
        #: the latest batch :meth:`horizon` read, its length and its horizon
        self._horizon: tuple[Sequence[Event], int, float] | None = None

    def new_state(self) -> PipelineState:
        return PipelineState(self.config)

    def alias_keys(self, state: PipelineState, events: Sequence[Event]) -> set[str]:
        """Ids whose identity links :meth:`step` may read: anonymous ids, user ids (erased, or
        merged into another user by ``$merge``) and, once any link exists, the users of the
        pending examples this batch closes. (A state reads each id's link once.)"""
        keys: set[str] = set()
        if isinstance(events, EventColumns):  # columns hold plain events only
            keys.update(events.user)
        else:
            keys.update(map(_ANON, events))
            keys.discard(None)
            keys.update(map(_USER, events))  # erased, or merged into another user
        if state.checkpoint.links:
            horizon = self.horizon(state, events)
            for task in state.tasks.values():
                if task.delayed:
                    keys.update(p.user for p in task.peek_due(horizon))
        return keys

    def horizon(self, state: PipelineState, events: Sequence[Event]) -> float:
        """The watermark this batch can reach at most."""
        if isinstance(events, EventColumns):
            return float(events.ts.max()) if len(events) else state.watermark
        if not events:
            return state.watermark
        # the runner asks several times per batch: the latest batch's answer is kept
        seen = self._horizon
        if seen is not None and seen[0] is events and seen[1] == len(events):
            return seen[2]
        horizon: float = max(map(_TS, events))
        self._horizon = (events, len(events), horizon)
        return horizon

    def batch_keys(
        self, state: PipelineState, events: Sequence[Event]
    ) -> tuple[set[str], set[str]]:
        """Users and items the events name, with the users a segment sweep or expiry may
        touch (``state`` having the batch's identity links and expiry candidates loaded)."""
        aliases = state.aliases
        if isinstance(events, EventColumns):
            users = {aliases.get(u, u) for u in events.user} if aliases else set(events.user)
            present: set[str | None] = set(events.item_id)
            present.discard(None)
            items = cast(set[str], present)
        else:
            users = set(map(_USER, events))
            if aliases:
                users = {aliases.get(u, u) for u in users}
            users.update(map(_ANON, events))
            users.discard(None)
            items = set(map(_ITEM, events))
            items.discard(None)
        if self.sweep_due(state.watermark, self.horizon(state, events)):
            for members in state.members.values():
                users |= members
        users.update(state.expiry_candidates())
        return users, items

    def required_keys(
        self, state: PipelineState, events: Sequence[Event]
    ) -> tuple[set[str], set[str]]:
        """Users and items whose stored state :meth:`step` will read for this batch (after
        ``state`` has the batch's identity links and expiry candidates loaded)."""
        users, items = self.batch_keys(state, events)
        aliases, horizon = state.aliases, self.horizon(state, events)
        for task in state.tasks.values():
            if not task.delayed:
                continue
            # delayed examples are learned (and counted on user and item) only when they close
            for pending in task.peek_due(horizon):
                users.add(aliases.get(pending.user, pending.user))
                if pending.item is not None:
                    items.add(pending.item)
        return users, items

    def step(self, state: PipelineState, events: Sequence[Event]) -> StepResult:
        """Apply a batch of validated events to ``state``; return what changed."""
        out = StepResult()
        ckpt = state.checkpoint
        profiles, items, dedup = state.profiles, state.items, state.dedup
        tasks = list(state.tasks.values())
        delayed = [t for t in tasks if t.delayed]
        records: list[_Record] = []
        #: the profile each record's event was applied to (by record position): a prediction
        #: goes to that profile, not to whichever profile has the user id when models have run
        owners: dict[int, Profile] = {}
        folds: dict[int, _Fold] = {}  # id of a profile folded into another -> where and when
        build, task_features = self.features.build, self.features.task_features
        apply = self.updater.apply
        watermark = ckpt.watermark
        aliases = state.aliases
        ttl = self.ttl
        before: dict[str, Standing | None] = {}  # where each user stood before this batch
        for e in events:
            if not dedup.add(e.event_id):
                out.duplicates += 1
                continue
            ts = e.ts
            if ts > watermark:
                watermark = ts
                for task in delayed:
                    task.learn_waited(watermark)  # feedback = "wait"
                    for pending in task.due(watermark):
                        self._resolve(state, task, pending, records, out)
            user = e.user
            anon = e.anonymous_id
            if e.type == FORGET:
                self._erase(state, user, out, before)
                out.applied += 1
                continue
            if ttl is not None and user in aliases:
                self._expire_owner(state, user, watermark, out, before)
            if user in aliases:  # a visitor known to be a user, or a user merged into another
                user = aliases[user]
                if e.type != MERGE:
                    e = msgspec.structs.replace(e, user=user)
            if e.type == MERGE:  # an operator's merge: screened to carry both ids
                if anon is not None and anon != user and aliases.get(anon) != user:
                    self._fold(state, anon, user, ts, watermark, out, before, folds, merge=True)
                out.applied += 1
                continue
            if anon is not None and anon != user and aliases.get(anon) != user:
                self._fold(state, anon, user, ts, watermark, out, before, folds)
            p = profiles.get(user)
            if p is not None and ttl is not None and p.last_ts + ttl < watermark:
                # idle past the TTL: expired, whether or not a batch ended in between
                self._delete(state, p, watermark, out, before, announce=True)
                p = None
            item_id = e.item_id
            it = None if item_id is None else items.get(item_id)
            shared: tuple[list[int], list[float]] | None = None
            mark = len(records)
            immediate: list[tuple[TaskState, bool]] = []
            for task in tasks:
                if task.delayed:
                    task.convert(e)
                    if e.type not in task.on:
                        continue
                    key = task.key_of(e)
                    if key is None or not task.may_open(user, key, ts):
                        continue
                    if shared is None:
                        shared = build(e, p, it)
                    t_idx, t_val = task_features(task.name, p, it, key)
                    idx, val = shared[0] + t_idx, shared[1] + t_val
                    pending = task.open(user, key, item_id, ts, array("q", idx), array("d", val))
                    k = task.ops.add(task.open_kind, idx, val)  # fnc: learned at once
                    records.append((R_OPENED, task, k, pending, ts, False))
                    task.learn_waited(watermark)  # a late exposure past its wait
                    if pending.deadline < watermark:
                        # a late exposure whose window has already closed in event time
                        self._resolve(state, task, pending, records, out)
                else:
                    label = task.immediate_label(e)
                    if label is None:
                        continue
                    if shared is None:
                        shared = build(e, p, it)
                    t_idx, t_val = task_features(task.name, p, it)
                    k = task.ops.add(
                        PREDICT_LEARN, shared[0] + t_idx, shared[1] + t_val, 1.0 if label else 0.0
                    )
                    records.append((R_IMMEDIATE, task, k, user, ts, label))
                    immediate.append((task, label))
                    out.examples += 1
            if user not in before:
                before[user] = None if p is None else standing(p)
            gap = None if p is None else ts - p.last_ts  # for the anomaly detector
            if p is None:
                p = profiles[user] = self.updater.new(user, ts)
                if anon == user:  # only an anonymous id: a visitor not known yet
                    p.anonymous = True
            elif p.anonymous and anon != user:
                p.anonymous = False
            apply(p, e)
            for i in range(mark, len(records)):
                owners[i] = p
            if state.anomaly is not None and state.anomaly.wants(e.type):
                p.anomaly = state.anomaly.score(e, self.updater.risk.velocity(p), gap)
            if item_id is not None and it is None:
                it = items[item_id] = ItemStats(anchor=ts)
            for task, label in immediate:
                p.record_outcome(task.name, label)
                if it is not None:
                    it.record_outcome(task.name, label)
            out.users.add(user)
            if item_id is not None and it is not None:
                self._count_item(it, e)
                out.items.add(item_id)
            out.applied += 1
        swept = self.sweep_due(ckpt.watermark, watermark)
        ckpt.watermark = watermark
        ckpt.events += out.applied
        ckpt.duplicates += out.duplicates
        self._run_models(state, records, owners, folds, out)
        self.finish(state, out, before, swept)
        return out

    def finish(
        self,
        state: PipelineState,
        out: StepResult,
        before: dict[str, Standing | None],
        swept: bool,
    ) -> None:
        """After the events: expiry, the population, traits and segments of the touched users."""
        profiles = state.profiles
        if self.ttl is not None:
            self._expire(state, out, before)
        for user, old in before.items():
            p = peek(profiles, user)  # its standing: no need to decode held fields
            state.population.move(old, None if p is None else standing(p))
        scores_in_task_order(profiles, out.users, state.tasks)
        if self.traits is not None:
            # traits depend only on the profile, so the state committed per batch is the same
            # as evaluating them after every event, at a fraction of the cost
            update_traits(self.traits, profiles, out.users)
        if self.segments is not None:
            self._segment(state, out, swept)

    def sweep_due(self, before: float, after: float) -> bool:
        """Whether event time crossed a sweep boundary, when time alone can change segments."""
        if self.segments is None or not self.segments.time_dependent or before == float("-inf"):
            return False
        return after // self._sweep_s > before // self._sweep_s

    def _segment(self, state: PipelineState, out: StepResult, swept: bool) -> None:
        """Re-evaluate the segments of the users this batch touched (and, on a sweep, of every
        current member) as of the watermark; record enters and exits."""
        assert self.segments is not None
        at = state.checkpoint.watermark
        users = set(out.users)
        if swept:
            for members in state.members.values():
                users |= members
        profiles, members_of = state.profiles, state.members
        memberships = self.segments.memberships
        for user in sorted(users):
            p = profiles.get(user)
            if p is None:
                continue
            now = memberships(p, at)
            if now == p.segments:
                continue
            for change in diff(user, p.segments, now, at):
                out.changes.append(change)
                members = members_of[change.segment]
                if change.change == "enter":
                    members.add(user)
                else:
                    members.discard(user)
            p.segments = now
            out.users.add(user)

    def _count_item(self, it: ItemStats, e: Event) -> None:
        ts, h = e.ts, self._h_items
        if needs_rebase(ts, it.anchor, h):
            anchor = ts
            it.popularity *= rebase_factor(anchor, it.anchor, h)
            it.anchor = anchor
        it.n += 1
        if it.category is None:
            it.category = e.category
        if ts > it.last_ts:
            it.last_ts = ts
        it.popularity += forward_weight(ts, it.anchor, h)
        if e.value is not None:
            it.value_sum += e.value
            it.value_n += 1

    def _resolve(
        self,
        state: PipelineState,
        task: TaskState,
        pending: Pending,
        records: list[_Record],
        out: StepResult,
    ) -> None:
        label = pending.converted
        if not task.at_once and task.waiting_learn is None:  # else learned before
            y = pending.total if task.regression else (1.0 if label else 0.0)
            task.ops.add_packed(LEARN, pending.idx, pending.val, y)
        task.close(pending)
        records.append((R_RESOLVED, task, -1, pending, pending.open_ts, label))
        out.examples += 1
        owner = state.aliases.get(pending.user, pending.user)
        p = state.profiles.get(owner)
        if p is not None:
            p.record_outcome(task.name, label)
            p.record_key_outcome(task.name, pending.key, label, self._key_room)
            out.users.add(owner)
        if pending.item is not None:
            it = state.items.get(pending.item)
            if it is not None:
                it.record_outcome(task.name, label)
                out.items.add(pending.item)

    def _fold(
        self,
        state: PipelineState,
        anon: str,
        user: str,
        ts: float,
        watermark: float,
        out: StepResult,
        before: dict[str, Standing | None],
        folds: dict[int, _Fold],
        *,
        merge: bool = False,
    ) -> None:
        """:meth:`_link` (of an operator's ``merge`` or a login), noting which profile went
        into which (see :func:`_score`). Either profile idle past the TTL as of ``watermark``
        expires first, as at a batch's end."""
        profiles = state.profiles
        for who in (anon, user):
            p = profiles.get(who)
            if p is not None and self.ttl is not None and p.last_ts + self.ttl < watermark:
                self._delete(state, p, watermark, out, before, announce=True)
        other, into = profiles.get(anon), profiles.get(user)
        had = frozenset(() if into is None else into.scores)
        self._link(state, anon, user, ts, out, before, merge=merge)
        if other is not None:
            folds[id(other)] = (state.profiles[user], had, other)

    def _run_models(
        self,
        state: PipelineState,
        records: list[_Record],
        owners: dict[int, Profile],
        folds: dict[int, _Fold],
        out: StepResult,
    ) -> None:
        """Run each task's model operations of the batch, record the metrics, and write each
        prediction to the profile its event was applied to: a profile erased or expired later
        in the batch takes its predictions with it, as when the batch ends before the erasure,
        and never passes them to a new profile of the same user id. A visitor's profile linked
        to a user later in the batch passes them on as the link would have (:meth:`_fold`)."""
        predictions = {}
        batches = {}
        for task in state.tasks.values():
            ops, log = task.take_batch()
            assert task.learner is not None
            run = run_regression_ops if task.regression else run_ops
            predictions[task.name] = run(task.learner, ops) if len(ops) else None
            out.pending[task.name] = log
            batches[task.name] = ops
        learned = out.learned = ExampleLog() if self.log_examples else None
        written: dict[int, set[str]] = {}  # tasks each profile got a score for, so far
        for i, (kind, task, k, ref, ts, label) in enumerate(records):
            preds = predictions[task.name]
            if kind == R_IMMEDIATE:
                assert preds is not None and isinstance(ref, str)
                p = float(preds[k])
                if learned is not None:
                    ops = batches[task.name]
                    s, e = ops.starts[k], ops.starts[k + 1]
                    y = 1.0 if label else 0.0
                    learned.add(task.name, ref, None, ts, ts, y, p, ops.idx[s:e], ops.val[s:e])
                task.metrics.record(p, label, ts)
                _score(owners[i], task.name, p, folds, written)
            elif kind == R_OPENED:
                assert preds is not None and isinstance(ref, Pending)
                ref.p = task.served(float(preds[k]))
                _score(owners[i], task.name, ref.p, folds, written)
            else:
                assert isinstance(ref, Pending)
                if learned is not None:
                    y = ref.total if task.regression else (1.0 if label else 0.0)
                    learned.add(
                        task.name, ref.user, ref.key, ref.open_ts, ref.deadline, y, ref.p,
                        _ints(ref.idx), _floats(ref.val),
                    )  # fmt: skip
                if isinstance(task.metrics, RegressionMetrics):
                    task.metrics.record(ref.p, ref.total, ts)
                else:
                    task.metrics.record(ref.p, label, ts)


def _ints(packed: bytes) -> list[int]:
    out = array("q")
    out.frombytes(packed)
    return out.tolist()


def _floats(packed: bytes) -> list[float]:
    out = array("d")
    out.frombytes(packed)
    return out.tolist()


def _score(
    profile: Profile, task: str, p: float, folds: dict[int, _Fold], written: dict[int, set[str]]
) -> None:
    """Write a prediction to the profile its event was applied to and, when that profile was
    folded into a user's later in the batch, to the user's as the fold would have: where the
    user had no score of the task then (a fold keeps the user's own scores)."""
    profile.scores[task] = p
    written.setdefault(id(profile), set()).add(task)
    fold = folds.get(id(profile))
    if fold is not None:
        into, had, _ = fold
        if task not in had and task not in written.get(id(into), ()):
            into.scores[task] = p

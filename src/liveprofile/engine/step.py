"""The Python part of the step, around the kernel: what a batch reads, and what ends it.

The per-event work is the kernel's (:mod:`liveprofile.engine.kernel`, driven by
:class:`~liveprofile.engine.compiled.CompiledStep`, compiled, or uncompiled under
``LIVEPROFILE_NO_JIT=1``). :class:`Step` holds the pipeline's configured parts and the batch's
work in Python: the ids and keys a batch needs loaded (:meth:`Step.required_keys`), the
lifecycle the kernel stops for (identity links, erasures, expiry: :class:`.Lifecycle`), and
what follows the events (:meth:`Step.finish`: expiry, the population, traits, segments).
:class:`liveprofile.engine.core.Core` is the step runners call.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.events import Event
>>> step = Step(PipelineConfig())
>>> state = step.new_state()
>>> step.horizon(state, [Event("e1", "u1", "view", 5.0), Event("e2", "u1", "view", 9.0)])
9.0
>>> step.sweep_due(0.0, 86400.0 * 2)  # no segment rule changes with time alone
False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from liveprofile.config import PipelineConfig
from liveprofile.engine.lazyprofiles import kernel_reads, peek, reading, update_traits
from liveprofile.engine.lifecycle import Lifecycle, StepResult
from liveprofile.engine.state import PipelineState, scores_in_task_order
from liveprofile.engine.visitors import BatchIds
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import Event
from liveprofile.features.hashing import FeatureBuilder
from liveprofile.profile.population import Standing, standing
from liveprofile.profile.segments import SegmentRules, diff
from liveprofile.profile.state import Profile, ProfileUpdater
from liveprofile.profile.traits import TraitEvaluator

#: where a folded profile went, the tasks the profile it went into had a score of, and the folded
#: profile itself (held, so that its id is not reused by a profile made later in the batch)
Fold = tuple[Profile, frozenset[str], Profile]


class Step(Lifecycle):
    """The pipeline's configured parts and the Python work of a batch around the kernel (see
    the module's docstring)."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.updater = ProfileUpdater(config.profile, config.risk)
        self.features = FeatureBuilder(config.features, self.updater)
        self.traits = TraitEvaluator(config.traits, self.updater) if config.traits else None
        self.segments = SegmentRules(config.segments, self.updater) if config.segments else None
        self._sweep_s = config.run.segment_sweep_s
        #: users inactive for longer than this (event time) expire; None: never
        self.ttl = config.run.profile_ttl_s
        #: keep the learned examples of each batch (``run.training_log``)
        self.log_examples = bool(config.run.training_log)
        #: the latest batch's columns (:meth:`batch_ids`), with the batch and its length
        self._ids: tuple[Sequence[Event], int, BatchIds] | None = None

    def new_state(self) -> PipelineState:
        return PipelineState(self.config)

    def batch_ids(self, events: Sequence[Event]) -> BatchIds:
        """The columns of ``events`` (not columns already), read once: the screen, the keys
        a batch loads and the step ask in turn, and the step takes them (:meth:`take_ids`)."""
        seen = self._ids
        if seen is not None and seen[0] is events and seen[1] == len(events):
            return seen[2]
        ids = BatchIds.of(events)
        self._ids = (events, len(events), ids)
        return ids

    def take_ids(self, events: Sequence[Event]) -> BatchIds:
        """:meth:`batch_ids`, forgotten by the step: a later batch reads its own."""
        ids = self.batch_ids(events)
        self._ids = None
        return ids

    def alias_keys(self, state: PipelineState, events: Sequence[Event]) -> set[str]:
        """Ids whose identity links the step may read: anonymous ids, user ids (erased, or
        merged into another user by ``$merge``) and, once any link exists, the users of the
        pending examples this batch closes. (A state reads each id's link once.)"""
        keys: set[str] = set()
        if isinstance(events, EventColumns) and events.plain:  # no link, no command
            keys.update(events.user)
        else:
            ids = self.batch_ids(events)
            keys.update(ids.anon)  # type: ignore[arg-type]
            keys.discard(None)
            keys.update(ids.user)  # erased, or merged into another user
        if state.checkpoint.links:
            horizon = self.horizon(state, events)
            for task in state.tasks.values():
                if task.delayed:
                    keys.update(p.user for p in task.peek_due(horizon))
        return keys

    def horizon(self, state: PipelineState, events: Sequence[Event]) -> float:
        """The watermark this batch can reach at most."""
        if not len(events):
            return state.watermark
        if not isinstance(events, EventColumns):
            events = self.batch_ids(events).cols
        return float(events.ts.max())

    def batch_keys(
        self, state: PipelineState, events: Sequence[Event]
    ) -> tuple[set[str], set[str]]:
        """Users and items the events name, with the users a segment sweep or expiry may
        touch (``state`` having the batch's identity links and expiry candidates loaded)."""
        aliases = state.aliases
        if isinstance(events, EventColumns) and events.plain:
            users = {aliases.get(u, u) for u in events.user} if aliases else set(events.user)
            present: set[str | None] = set(events.item_id)
        else:
            ids = self.batch_ids(events)
            users = set(ids.user)
            anons = set(ids.anon)
            anons.discard(None)
            if aliases:
                users = {aliases.get(u, u) for u in users}
                # a linked id's user: its alias list loses the id if the batch re-links it
                users.update(aliases[a] for a in anons if a in aliases)  # type: ignore[index]
            users |= anons  # type: ignore[arg-type]
            present = set(ids.cols.item_id)
        present.discard(None)
        items = cast(set[str], present)
        if self.sweep_due(state.watermark, self.horizon(state, events)):
            for members in state.members.values():
                users |= members
        users.update(state.expiry_candidates())
        return users, items

    def required_keys(
        self, state: PipelineState, events: Sequence[Event]
    ) -> tuple[set[str], set[str]]:
        """Users and items whose stored state the step will read for this batch (after
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
        reads = kernel_reads(self.segments.fields)
        for user in sorted(users):
            p = peek(profiles, user)
            if p is None:
                continue
            # the rules read a copy with only the held fields they use decoded
            now = memberships(reading(profiles, user, reads), at)
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

    def _fold(
        self,
        state: PipelineState,
        anon: str,
        user: str,
        ts: float,
        watermark: float,
        out: StepResult,
        before: dict[str, Standing | None],
        folds: dict[int, Fold],
        *,
        merge: bool = False,
    ) -> None:
        """:meth:`_link` (of an operator's ``merge`` or a login), noting which profile went
        into which (the scores it had go with it: ``scorecuts.cut_scores``). Either profile
        idle past the TTL as of ``watermark`` expires first, as at a batch's end."""
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

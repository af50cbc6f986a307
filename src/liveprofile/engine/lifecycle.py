"""What ends or joins profiles, in Python at the kernel's stops: identity links, erasures, expiry.

:class:`Lifecycle` holds the parts of :class:`~liveprofile.engine.step.Step` that delete
profiles (merged into another, erased on request, expired after the TTL) with their links and
segment memberships; :class:`StepResult` is what a batch changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from liveprofile.durations import DAY
from liveprofile.engine.erasure import repoint, unlink_to
from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.state import PipelineState
from liveprofile.learn.examples import ExampleLog
from liveprofile.learn.tasks import PendingColumns, PendingLog
from liveprofile.profile.identity import merge_profiles
from liveprofile.profile.population import Standing, standing
from liveprofile.profile.segments import SegmentChange
from liveprofile.profile.state import Profile, ProfileUpdater


@dataclass
class StepResult:
    """What one batch changed: the keys to write and the counts to report."""

    applied: int = 0
    duplicates: int = 0
    examples: int = 0
    users: set[str] = field(default_factory=set)
    items: set[str] = field(default_factory=set)
    #: item rows already encoded (the compiled path keeps item statistics as arrays)
    item_rows: dict[str, bytes] = field(default_factory=dict)
    #: profile rows already encoded (the compiled path's, see ``engine.profilerows``)
    profile_rows: dict[str, bytes] = field(default_factory=dict)
    pending: dict[str, PendingLog | PendingColumns] = field(default_factory=dict)
    #: segment enters and exits, in the order they happened
    changes: list[SegmentChange] = field(default_factory=list)
    #: profiles deleted (merged into another, erased or expired)
    deleted: set[str] = field(default_factory=set)
    #: users erased on request, with their aliases: their queued changes must go too
    erased: set[str] = field(default_factory=set)
    #: identity links made (anonymous id -> user id) or removed (-> None)
    links: dict[str, str | None] = field(default_factory=dict)
    #: expiry index rows to write (see ``PipelineState.expiry_rows``)
    expiry: dict[str, bytes | None] = field(default_factory=dict)
    #: the examples the models learned, when ``run.training_log`` asks for them
    learned: ExampleLog | None = None


class Lifecycle:
    """Identity links, erasures and expiry (see the module's docstring)."""

    updater: ProfileUpdater
    #: users inactive for longer than this (event time) expire; None: never
    ttl: float | None

    def _link(
        self,
        state: PipelineState,
        anon: str,
        user: str,
        ts: float,
        out: StepResult,
        before: dict[str, Standing | None],
        *,
        merge: bool = False,
    ) -> None:
        """Make ``anon`` an alias of ``user`` and fold the anonymous profile into the user's;
        an operator's ``merge`` of a user also re-points the links that led to it."""
        old = state.aliases.get(anon)
        state.aliases[anon] = user
        state.checkpoint.links += 1
        out.links[anon] = user
        if old is not None and old != user:
            _unlist(state, old, anon, out)
        if merge:
            repoint(state, anon, user, out)
        profiles = state.profiles
        other = profiles.pop(anon, None)
        if other is None:
            return
        p = profiles.get(user)
        for who, profile in ((user, p), (anon, other)):
            if who not in before:
                before[who] = None if profile is None else standing(profile)
        if p is None:
            p = profiles[user] = self.updater.new(user, ts)
        merge_profiles(self.updater, p, other)
        for alias in other.aliases:  # a known user's own links now lead to ``user``
            if alias != user:
                state.aliases[alias] = user
                out.links[alias] = user
        self._leave_segments(state, other, ts, out, announce=True)
        out.deleted.add(anon)
        out.users.discard(anon)
        out.users.add(user)

    def _erase(
        self, state: PipelineState, user: str, out: StepResult, before: dict[str, Standing | None]
    ) -> None:
        """Forget a user on request: the profile, its segment memberships and every identity
        link of it or leading to it (:mod:`liveprofile.engine.erasure`). Erasing an anonymous
        id that is linked removes its link (and the links to it) only."""
        owner = state.aliases.pop(user, None)
        p = None if owner is not None else peek(state.profiles, user)
        if owner is not None:
            out.links[user] = None
            gone = {user, *unlink_to(state, {user}, out)}
        elif p is not None:
            # no exit changes: the changes about an erased user are removed, not added to
            at = state.checkpoint.watermark
            gone = {user, *self._delete(state, p, at, out, before, announce=False)}
        else:
            gone = unlink_to(state, {user}, out)
        if not gone:
            return
        out.erased.update((user, *gone))
        kept = None if owner is None else peek(state.profiles, owner)
        if kept is not None and not gone.isdisjoint(kept.aliases):
            kept.aliases = [a for a in kept.aliases if a not in gone]
            out.users.add(kept.user)

    def _expire_owner(
        self,
        state: PipelineState,
        user: str,
        at: float,
        out: StepResult,
        before: dict[str, Standing | None],
    ) -> None:
        """The user a linked id ``user`` leads to, idle past the TTL as of event time ``at``,
        expires before an event of ``user``, and its links with it: the event is then the
        id's own, as it is when a batch ends between the expiry and the event."""
        owner = state.aliases.get(user)
        p = None if owner is None or self.ttl is None else peek(state.profiles, owner)
        if p is not None and self.ttl is not None and p.last_ts + self.ttl < at:
            self._delete(state, p, at, out, before, announce=True)

    def _expire(
        self, state: PipelineState, out: StepResult, before: dict[str, Standing | None]
    ) -> None:
        """Delete the profiles idle for longer than the TTL, as of the watermark; index the
        users this batch touched by the day of their last event.

        A profile expires at the end of the first batch whose watermark is more than the TTL
        past the end of the day of its last event: the rule the last-seen index can apply to
        users of earlier batches, applied to this batch's users too, so that where batches end
        changes nothing. (An event of an idle user is judged exactly, at the kernel's stop.)"""
        assert self.ttl is not None
        at = state.checkpoint.watermark
        profiles = state.profiles
        candidates = state.take_expiry_candidates(at, self.ttl, out.expiry)
        expired: set[str] = set()
        for user in [*candidates, *sorted(out.users)]:  # idle ones this batch touched too
            p = peek(profiles, user)  # its last event time: no need to decode held fields
            if p is not None and (p.last_ts // DAY + 1) * DAY + self.ttl < at:
                expired.add(user)
                expired |= self._delete(state, p, at, out, before, announce=True, unlink=False)
        if expired:  # every link that led to them: one pass for all
            unlink_to(state, expired, out)
        touched = [peek(profiles, u) for u in out.users]
        state.index_last_seen([p for p in touched if p is not None], out.expiry)

    def _delete(
        self,
        state: PipelineState,
        p: Profile,
        at: float,
        out: StepResult,
        before: dict[str, Standing | None],
        *,
        announce: bool,
        unlink: bool = True,
    ) -> set[str]:
        """Delete an expired or erased profile with its memberships (with exit changes at
        event time ``at`` when ``announce``) and every identity link to it (its alias list's,
        and with ``unlink`` those :func:`unlink_to` finds: the caller's to find otherwise);
        return the ids unlinked."""
        user = p.user
        del state.profiles[user]
        if user not in before:
            before[user] = standing(p)
        # an alias whose link a $merge re-pointed to another user is that user's now
        mine = [a for a in p.aliases if state.aliases.get(a, user) == user]
        for alias in mine:
            state.aliases.pop(alias, None)
            out.links[alias] = None
        gone = {*mine, *(unlink_to(state, {user, *mine}, out) if unlink else ())}
        self._leave_segments(state, p, at, out, announce=announce)
        out.deleted.add(user)
        out.users.discard(user)
        return gone

    def _leave_segments(
        self, state: PipelineState, p: Profile, ts: float, out: StepResult, *, announce: bool
    ) -> None:
        """Take a deleted profile out of its segments (with exit changes when ``announce``)."""
        for segment in p.segments:
            members = state.members.get(segment)
            if members is not None:
                members.discard(p.user)
            if announce:
                out.changes.append(SegmentChange(segment, p.user, "exit", ts))
        p.segments = []


def _unlist(state: PipelineState, owner: str, alias: str, out: StepResult) -> None:
    """Take ``alias``, linked to another user now, off the alias list of ``owner`` (its user
    before, loaded: ``Step.batch_keys``), so that deleting ``owner`` later does not remove the
    link in a batch that does not read it."""
    p = peek(state.profiles, owner)
    if p is not None and alias in p.aliases:
        p.aliases = [a for a in p.aliases if a != alias]
        out.users.add(owner)

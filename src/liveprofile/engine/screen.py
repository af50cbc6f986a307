"""Screening: the checks an event passes against the pipeline's state before the core sees it.

The schema (:mod:`liveprofile.events.schema`) judges an event alone; these rules need the
watermark, the stored profiles and the ``[events]`` section of the config:

- **value**: ``|value|`` at most ``events.max_value`` (a purchase may be negative: a refund);
- **future skew**: event time at most ``events.max_future`` ahead of the later of the watermark
  and the runner's clock, so one event dated 2099 cannot move the clock for everyone (the clock
  matters only for events from the future: a replay of history is never near it);
- **lateness**: event time at most ``events.allowed_lateness`` behind the watermark (no bound by
  default: decayed sums do not depend on order, so a late event is counted exactly);
- **identity**: an event links ``anonymous_id`` to ``user_id`` only when the anonymous id is not
  a known user (its profile, if any, was made by anonymous events only); merging two known users
  takes an operator's ``$merge`` command.

An event that fails goes to the batch's dead letters with the reason; it never reaches the core,
so it never moves the watermark. A re-sent event (an ``event_id`` the step will count as a
duplicate) is not judged again: it passes, and changes nothing.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.core import Core
>>> from liveprofile.events import Event
>>> from liveprofile.events.sources import Batch
>>> from liveprofile.store import MemoryStore
>>> core = Core(PipelineConfig())
>>> state = core.new_state()
>>> batch = Batch([Event("e1", "u1", "view", 1.5e9), Event("e2", "u1", "view", 4.1e9),
...                Event("e3", "u1", "purchase", 1.5e9, value=-20.0)])
>>> screen(core, state, MemoryStore(), "test", batch, now=1.6e9)
>>> [e.event_id for e in batch.events]
['e1', 'e3']
>>> print(batch.dead_letters[0].reason.replace(" (", chr(10) + "("))
'ts' 2099-12-03T16:53:20Z is 2500000000 s ahead of the watermark and the clock
(allowed: events.max_future = 86400 s)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import numpy as np

from liveprofile.config import EventsConfig
from liveprofile.engine.core import Core
from liveprofile.engine.state import PipelineState
from liveprofile.events.columns import EventColumns
from liveprofile.events.deadletter import DeadLetter
from liveprofile.events.dedup import Repeats
from liveprofile.events.schema import COMMANDS, FORGET, MERGE, Event, encode_event
from liveprofile.events.sources import Batch
from liveprofile.profile.state import Profile
from liveprofile.store.base import Store


def screen(
    core: Core, state: PipelineState, store: Store, source: str, batch: Batch, now: float
) -> None:
    """Move the events of ``batch`` that break a rule into its dead letters (see above);
    ``now`` is the runner's clock in epoch seconds."""
    events = batch.events
    if not len(events):
        return
    rules = core.config.events
    watermark = state.checkpoint.watermark
    if isinstance(events, EventColumns):
        if _columns_pass(events, rules, watermark, now):
            return
        events = list(events)
    limit, bound = max(watermark, now) + rules.max_future_s, rules.max_value
    lateness = rules.allowed_lateness_s
    if lateness is None:
        suspects = _suspects(events, limit, bound)
        if not suspects:
            return  # the common case, checked at once
    else:
        suspects = list(range(len(events)))
    # the events within the limits pass; the others are judged in order, with the watermark
    # and the ids that acted as known users before them
    links = {
        i
        for e in (events[k] for k in suspects)
        if e.anonymous_id is not None and e.anonymous_id != e.user and e.type != FORGET
        for i in ((e.anonymous_id, e.user) if e.type == MERGE else (e.anonymous_id,))
    }
    if links:
        state.ensure_loaded(store, links, set())
    named = _followed([events[k] for k in suspects])
    dead: set[int] = set()
    known = _Known(state, core.config.run.profile_ttl_s)
    # re-sent events pass: the step counts them, nothing else (None: the batch has none)
    fresh = state.dedup.fresh([e.event_id for e in events])
    repeats = None if fresh else Repeats(state.dedup)
    start = 0
    for k in suspects:
        for e in events[start:k]:
            if repeats is not None:
                if repeats.repeated(e.event_id):
                    continue
                repeats.passed(e.event_id)
            if e.ts > watermark:
                watermark = e.ts
            if e.user in named:
                known.at = watermark
                known.acted(e)
        start = k + 1
        e = events[k]
        if repeats is not None and repeats.repeated(e.event_id):
            continue
        known.at = watermark
        reason = _reason(e, rules, watermark, now, known)
        if reason is not None:
            raw = encode_event(e).decode()
            batch.dead_letters.append(DeadLetter(raw, reason, source, batch.position(k)))
            dead.add(k)
            continue
        if repeats is not None:
            repeats.passed(e.event_id)
        if e.ts > watermark:
            watermark = e.ts
        known.acted(e)
    if dead:
        if batch.positions:
            batch.positions = [p for k, p in enumerate(batch.positions) if k not in dead]
        batch.events = [e for k, e in enumerate(events) if k not in dead]


def _suspects(events: Sequence[Event], limit: float, bound: float) -> list[int]:
    """The positions of the events that may break a rule: all but a visitor's or a user's
    events (not a login, not a command needing ids) within ``limit`` and ``bound``."""
    return [
        k
        for k, e in enumerate(events)
        if e.ts > limit
        or ((a := e.anonymous_id) is not None and (a != e.user or e.type == MERGE))
        or (e.value is not None and abs(e.value) > bound)
    ]


def _followed(suspects: list[Event]) -> set[str]:
    """The ids whose known-user state the judgement of ``suspects`` reads: the anonymous ids
    of logins and, as a ``$merge`` makes its user known when its anonymous id has a profile,
    the anonymous ids merged into those. An event that passes at once names its user alone,
    so the events of other users leave these ids as they are."""
    named = {
        e.anonymous_id
        for e in suspects
        if e.anonymous_id is not None and e.anonymous_id != e.user and e.type not in COMMANDS
    }
    merges = [e for e in suspects if e.type == MERGE and e.anonymous_id is not None]
    grown = True
    while grown:
        grown = False
        for e in merges:
            if e.user in named and e.anonymous_id not in named:
                named.add(cast(str, e.anonymous_id))
                grown = True
    return named


def _columns_pass(cols: EventColumns, rules: EventsConfig, watermark: float, now: float) -> bool:
    """Whether every event of plain columns passes (the common case, checked at once)."""
    if rules.allowed_lateness_s is not None:
        return False
    limit = max(watermark, now) + rules.max_future_s
    too_large = np.abs(cols.value) > rules.max_value  # NaN (no value) compares false
    return bool(cols.ts.max() <= limit and not too_large.any())


def _reason(
    e: Event,
    rules: EventsConfig,
    watermark: float,
    now: float,
    known: _Known,
) -> str | None:
    value = e.value
    if value is not None and abs(value) > rules.max_value:
        return f"'value' {value!r} is beyond +-{rules.max_value:g} (events.max_value)"
    skew = rules.max_future_s
    if e.ts > max(watermark, now) + skew:
        ahead = e.ts - max(watermark, now)
        return (
            f"'ts' {_iso(e.ts)} is {ahead:.0f} s ahead of the watermark and the clock "
            f"(allowed: events.max_future = {skew:g} s)"
        )
    lateness = rules.allowed_lateness_s
    if lateness is not None and math.isfinite(watermark) and e.ts < watermark - lateness:
        return (
            f"'ts' {_iso(e.ts)} is {watermark - e.ts:.0f} s behind the watermark "
            f"(allowed: events.allowed_lateness = {lateness:g} s)"
        )
    anon = e.anonymous_id
    if e.type == MERGE:
        if anon is None or anon == e.user:
            return "'$merge' needs a 'user_id' and a different 'anonymous_id' (merged into it)"
        return None
    if (
        anon is not None
        and anon != e.user
        and e.type not in COMMANDS
        and known.is_known(anon, e.ts)
    ):
        return (
            f"'anonymous_id' {anon!r} is a known user: an event links only anonymous ids; "
            "an operator merges known users with a '$merge' command"
        )
    return None


class _Known:
    """Which ids are known users at a point of a batch, as the step will have left them: an id
    is known once its own events (not only an anonymous id's) made its profile, until a
    ``$forget`` erases it, a ``$merge`` folds it into another or it is idle past the profile
    TTL (the step expires such a profile at its next event or link); a ``$merge`` makes the
    user merged into known when it takes a profile that way. Commands alone make no one
    known."""

    def __init__(self, state: PipelineState, ttl: float | None) -> None:
        self.state = state
        self.ttl = ttl
        self.at = state.checkpoint.watermark
        self.known: set[str] = set()  # known users by this batch's events
        self.visitors: set[str] = set()  # anonymous profiles made by this batch's events
        self.gone: set[str] = set()  # ids whose stored profile this batch removed
        self.last: dict[str, float] = {}  # the latest event of a profile this batch touched

    def _stored(self, user: str) -> Profile | None:
        return None if user in self.gone else self.state.profiles.get(user)

    def _idle(self, user: str, at: float) -> bool:
        if self.ttl is None:
            return False
        p = self._stored(user)
        last = max(self.last.get(user, -math.inf), -math.inf if p is None else p.last_ts)
        return last + self.ttl < at

    def is_known(self, user: str, ts: float) -> bool:
        """Whether ``user`` is a known user for an event at ``ts`` that passes next."""
        if self._idle(user, max(self.at, ts)):
            return False
        p = self._stored(user)
        return user in self.known or (
            user not in self.visitors and p is not None and not p.anonymous
        )

    def _has_profile(self, user: str) -> bool:
        return user in self.known or user in self.visitors or self._stored(user) is not None

    def _drop(self, user: str) -> None:
        self.known.discard(user)
        self.visitors.discard(user)
        self.last.pop(user, None)
        self.gone.add(user)

    def acted(self, e: Event) -> None:
        """Take the effect of ``e``, which passed, on who is known."""
        user, anon = e.user, e.anonymous_id
        self.at = max(self.at, e.ts)
        if e.type == FORGET:
            self._drop(user)
            return
        ttl = self.ttl
        for who in (user, anon) if ttl is not None else ():  # idle past the TTL: expired first
            if who is not None and self._has_profile(who) and self._idle(who, self.at):
                self._drop(who)
        if e.type == MERGE:
            assert anon is not None
            if self._has_profile(anon) and not self._has_profile(user):
                self.known.add(user)
            self._drop(anon)
            return
        if anon == user:  # a visitor's event (the usual one here: once it has a profile, a no-op)
            if user not in self.visitors and not self._has_profile(user):
                self.visitors.add(user)
        else:
            if anon is not None:  # a login folds the visitor's profile into the user's
                self._drop(anon)
            self.known.add(user)
            self.visitors.discard(user)
        if ttl is not None:  # read by _idle only
            self.last[user] = max(self.last.get(user, -math.inf), e.ts)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

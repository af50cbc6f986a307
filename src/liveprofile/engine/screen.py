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
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import compress, repeat
from operator import is_not
from typing import cast

import numpy as np

from liveprofile.config import EventsConfig
from liveprofile.engine.core import Core
from liveprofile.engine.knownusers import KnownUsers
from liveprofile.engine.state import PipelineState
from liveprofile.engine.visitors import BatchIds
from liveprofile.events.columns import EventColumns
from liveprofile.events.deadletter import DeadLetter
from liveprofile.events.dedup import Repeats
from liveprofile.events.schema import COMMANDS, FORGET, MERGE, Event, encode_event
from liveprofile.events.sources import Batch
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
    plain = isinstance(events, EventColumns) and events.plain
    if plain and _columns_pass(cast(EventColumns, events), rules, watermark, now):
        return
    limit, bound = max(watermark, now) + rules.max_future_s, rules.max_value
    lateness = rules.allowed_lateness_s
    ids = core.batch_ids(events)  # read once, shared with the step
    if lateness is None:
        suspects = _suspects(ids, limit, bound)
        if not suspects:
            return  # the common case, checked at once
    else:
        suspects = list(range(len(events)))
    users = ids.user
    # the events within the limits pass; the others are judged in order, with the watermark
    # and the ids that acted as known users before them
    links = {
        i
        for e in (events[k] for k in suspects)
        if e.anonymous_id is not None and e.anonymous_id != e.user and e.type != FORGET
        for i in ((e.anonymous_id, e.user) if e.type == MERGE else (e.anonymous_id,))
    }
    # an event under a linked id is the user's it leads to (the step moves it there)
    named_ids = set(users)
    state.ensure_aliases(store, named_ids | links)
    aliases = state.aliases
    linked = (named_ids | links) & aliases.keys()
    owners = {aliases[u] for u in linked}
    if links or owners:
        state.ensure_loaded(store, links | owners, set())
    # the ids whose events the judgement reads: those named, and linked ids (moved to a user)
    named = _followed([events[k] for k in suspects])
    follow = named | linked | links
    dead: set[int] = set()
    known = KnownUsers(state, core.config.run.profile_ttl_s)

    def judge(k: int, e: Event, watermark: float) -> bool:
        """Whether suspect ``e`` (event ``k``) passes; if not, it goes to the dead letters."""
        known.at = watermark
        reason = _reason(e, rules, watermark, now, known)
        if reason is None:
            return True
        raw = encode_event(e).decode()
        batch.dead_letters.append(DeadLetter(raw, reason, source, batch.position(k)))
        dead.add(k)
        return False

    # re-sent events pass: the step counts them, nothing else (None: the batch has none)
    fresh = state.dedup.fresh(ids.cols.event_id)
    if fresh and lateness is None:
        _judge_fresh(events, ids, suspects, follow, known, judge, watermark)
    else:
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
                if e.user in follow:
                    known.at = watermark
                    known.acted(e)
            start = k + 1
            e = events[k]
            if repeats is not None and repeats.repeated(e.event_id):
                continue
            if not judge(k, e, watermark):
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


def _judge_fresh(
    events: Sequence[Event],
    ids: BatchIds,
    suspects: list[int],
    follow: set[str],
    known: KnownUsers,
    judge: Callable[[int, Event, float], bool],
    watermark: float,
) -> None:
    """The judgement of a batch without re-sent events: only the suspects and the events of
    the followed ids are visited, with the watermark each would see from the events' times.
    With no TTL and no ``$merge`` in the batch (a ``$merge`` is a suspect), an unlinked
    visitor's own event (most of a login batch's) changes nothing the judgement reads, and is
    passed over too."""
    users = ids.user
    quiet = ids.cols.ts.copy()
    quiet[suspects] = -math.inf
    upto = np.maximum.accumulate(quiet).tolist()  # the latest time passed at once, to each
    end = suspects[-1]
    mine = list(compress(range(end), map(follow.__contains__, users[:end])))
    if mine and known.ttl is None and all(events[k].type != MERGE for k in suspects):
        mine = _changing(mine, ids, suspects, known.state.aliases)
    suspect = dict.fromkeys(suspects, True)
    visits = sorted(suspect.keys() | mine) if mine else suspects
    passed = watermark  # the latest time of the suspects passed (or the state's watermark)
    for k in visits:
        if k in suspect:
            e = events[k]
            if judge(k, e, max(passed, upto[k - 1]) if k else passed):
                passed = max(passed, e.ts)
                known.acted(e)
            continue
        known.at = max(passed, upto[k])
        known.acted(events[k])


def _changing(
    mine: list[int], ids: BatchIds, suspects: list[int], aliases: dict[str, str]
) -> list[int]:
    """Of ``mine`` (the positions of the followed ids' events that are not suspects, in a
    batch with no TTL and no ``$merge``), those that may change what the judgement reads: all
    but an unlinked visitor's own events before the batch may first link it (its first login
    as the anonymous id; a ``$forget`` links nothing, but ends the shortcut for the batch).
    Visiting one more event than needed changes nothing (the judgement of every event visits
    them all), so a login the screen refuses still counts as linking."""
    if ids.command.any():
        return mine
    users, anons = ids.user, ids.anon
    end = suspects[-1] + 1
    opens: dict[str | None, int] = {}
    for k in reversed(suspects):
        opens[anons[k]] = k
    return [
        k
        for k in mine
        if anons[k] != users[k] or users[k] in aliases or k > opens.get(users[k], end)
    ]


def _suspects(ids: BatchIds, limit: float, bound: float) -> list[int]:
    """The positions of the events that may break a rule: all but a visitor's or a user's
    events (not a login, not a command needing ids) within ``limit`` and ``bound``."""
    cols = ids.cols
    marks = cols.ts > limit
    marks |= np.abs(cols.value) > bound  # NaN (no value): neither
    marks |= ids.linking()
    if MERGE in cols.type:  # a merge that names an anonymous id needs ids
        n = len(cols)
        merges = np.fromiter(map(MERGE.__eq__, cols.type), np.bool_, n)
        merges &= np.fromiter(map(is_not, ids.anon, repeat(None)), np.bool_, n)
        marks |= merges
    suspects: list[int] = np.flatnonzero(marks).tolist()
    return suspects


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
    known: KnownUsers,
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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

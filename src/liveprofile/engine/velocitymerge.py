"""A visitor's velocity lists merged into a user's on their MessagePack, in compiled code.

Folding a returning customer's visitor into the user (:mod:`.foldinto`) merges the visitor's
velocity lists into the user's (:meth:`~liveprofile.profile.risk.RiskTracker.merge_counts`).
On the profile objects that meant decoding both profiles, whose lists (and kernel fields) a
:class:`~liveprofile.engine.lazyprofiles.ProfileMap` holds as bytes between batches.
:func:`merge_rows` reads the two users' lists as the MessagePack they are held as (or written
from the objects), merges them with the counting rules of :mod:`.velocity` (each of the
visitor's counted events added to the user's lists in their order, each item seen), and holds
the result as bytes on the user's profile: the same lists, entry for entry, with neither profile
decoded.

In a batch, :func:`book_merge` notes each such merge (the visitor's lists as bytes, taken before
its profile goes) and :func:`count_merges` does them all at once, in one compiled pass over the
events of the users merged, in the batch's order: each user's events before a login counted on
its own lists, then the visitor's lists merged into the user's (:func:`merge_rows`' rules), as
counting and merging at each login would, without a pass per login.

>>> from liveprofile.config import RiskConfig
>>> from liveprofile.profile.risk import RiskTracker
>>> from liveprofile.profile.state import Profile
>>> tracker = RiskTracker(RiskConfig(cap=3))
>>> into = Profile("u", 0.0, 0.0, 100.0, v_events=[(90, 2)], v_items=[(90, [7])])
>>> other = Profile("a", 0.0, 0.0, 95.0, v_events=[(60, 1), (95, 2)], v_items=[(95, [7, 8])])
>>> profiles = ProfileMap(u=into, a=other)
>>> merge_rows(tracker, profiles, "u", "a", 100.0)
>>> profiles["u"].v_events, profiles["u"].v_items
([(90, 1), (95, 2)], [(95, [7, 8])])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numba
import numpy as np

from liveprofile.engine.lazyprofiles import ProfileMap
from liveprofile.engine.velocity import _add_count, _add_item, _prune, _run, event_columns
from liveprofile.engine.velocitybytes import read_lists, write_lists
from liveprofile.profile.risk import RiskTracker

if TYPE_CHECKING:
    from liveprofile.engine.riskcounts import RiskCounts


class Merge(NamedTuple):
    """A visitor's velocity lists to merge into a user's at a login (:func:`count_merges`)."""

    e: int  # the login's event
    ra: int  # the visitor's row
    ru: int  # the user's row
    user: str
    lists: bytes  # the visitor's lists, as the MessagePack array of the three
    last: float  # the merged profile's last event time
    n: int  # and its events


def merge_rows(
    tracker: RiskTracker, profiles: ProfileMap, user: str, anon: str, last: float
) -> None:
    """``tracker.merge_counts(profiles[user], profiles[anon], last)`` on the lists' bytes: the
    merged lists are held as bytes on ``user``'s profile; neither profile is decoded."""
    into, other = dict.__getitem__(profiles, user), dict.__getitem__(profiles, anon)
    parts = profiles.velocity_rows([user, anon], [into, other])
    starts = np.array([0, len(parts[0])], np.int64)
    times, values, lens = read_lists(b"".join(parts), starts, tracker.cap)
    windows = np.array(tracker.windows, np.float64)
    _merge(times, values, lens, windows, tracker.cap, last, 0, 1)
    blob, offsets = write_lists(
        np.ascontiguousarray(times[:, :1]), np.ascontiguousarray(values[:, :1]), lens[:1]
    )
    at = offsets[0]
    within = (at - at[0] + 1).tolist()  # as count_velocity holds them
    profiles.hold_velocity(user, into, blob[int(at[0]) - 1 : int(at[3])], within)
    if into.anomaly is None:
        into.anomaly = other.anomaly


def book_merge(
    risk: RiskCounts, profiles: ProfileMap, e: int, rows: tuple[int, int], users: tuple[str, str],
    last: float, n: int,
) -> None:  # fmt: skip
    """Note the merge of visitor ``users[1]``'s lists (row ``rows[0]``) into user ``users[0]``'s
    (row ``rows[1]``) at login event ``e`` for :func:`count_merges`, before the visitor's
    profile goes; ``last`` and ``n``: the merged profile's last event time and events."""
    (ru, ra), (user, anon) = rows, users
    lists = profiles.velocity_rows([anon], [dict.__getitem__(profiles, anon)])[0]
    risk.merges.append(Merge(e, ra, ru, user, lists, last, n))


def count_merges(risk: RiskCounts, profiles: ProfileMap) -> None:
    """The merges :func:`book_merge` noted, with the uncounted events of the users merged
    before each: the events of a user (or visitor) before its last merge are counted on its
    lists in order, each visitor's lists merged into the user's at the login; the users' lists
    are held as bytes on their profiles (the visitors' profiles are gone), and their rows'
    last event times and counts (``risk.last``, ``risk.n``) are the merged profiles'."""
    merges, risk.merges = risk.merges, []
    if not merges:
        return
    ev = risk.ev
    until = np.full(len(risk.last), -1, np.int64)  # per row, its last merge's event
    for m in merges:
        until[m.ra] = max(until[m.ra], m.e)
        until[m.ru] = max(until[m.ru], m.e)
    todo = np.flatnonzero(ev.ok & ~risk.counted)
    todo = todo[todo < until[ev.urow[todo]]]
    risk.counted[todo] = True
    # the slots: the users merged into (their lists from the profiles), then the visitors
    users = list(dict.fromkeys(m.ru for m in merges))
    slot_of = {r: j for j, r in enumerate(users)}
    names = {m.ru: m.user for m in merges}
    who = [names[r] for r in users]
    chosen = [dict.__getitem__(profiles, u) for u in who]
    parts = profiles.velocity_rows(who, chosen)
    for m in merges:
        slot_of[m.ra] = len(parts)
        parts.append(m.lists)
    rows = [*users, *(m.ra for m in merges)]
    lengths = np.fromiter(map(len, parts), np.int64, len(parts))
    tracker = risk.tracker
    times, values, lens = read_lists(b"".join(parts), np.cumsum(lengths) - lengths, tracker.cap)
    last = np.array([risk.last[r] for r in rows], np.float64)
    counts = np.array([risk.n[r] for r in rows], np.int64)
    slot = np.array([slot_of[r] for r in ev.urow[todo].tolist()], np.int64)
    at = np.searchsorted(todo, [m.e for m in merges])  # the events counted before each
    into = np.array([[slot_of[m.ru], slot_of[m.ra]] for m in merges], np.int64)
    after = np.array([(m.last, m.n) for m in merges], np.float64)
    _count_merging(
        event_columns(risk, todo, slot), (last, counts), (times, values, lens),
        (np.array(tracker.windows, np.float64), tracker.cap, True), (at, into, after),
    )  # fmt: skip
    k = len(users)  # the users' lists written back: the visitors' go with their profiles
    mine = np.ascontiguousarray(times[:, :k]), np.ascontiguousarray(values[:, :k])
    blob, offsets = write_lists(*mine, lens[:k])
    begins = (offsets[:, 0] - 1).tolist()
    ends = offsets[:, 3].tolist()
    within = (offsets - offsets[:, :1] + 1).tolist()
    for j, (u, p) in enumerate(zip(who, chosen, strict=True)):
        profiles.hold_velocity(u, p, blob[begins[j] : ends[j]], within[j])
    for j, r in enumerate(users):
        risk.last[r], risk.n[r], risk.exists[r] = float(last[j]), int(counts[j]), True
    for m in merges:
        risk.reset(m.ra, None)


@numba.njit(cache=True, nogil=True)
def _count_merging(events, users, lists, params, merges):  # type: ignore[no-untyped-def]
    """:func:`.velocity._run` over ``events`` with merges between them: merge ``q`` (after the
    first ``at[q]`` events) merges slot ``into[q, 1]``'s lists into slot ``into[q, 0]``'s,
    whose last event time and count become ``after[q]``."""
    slot, ts, monetary, items = events
    last, n = users
    times, values, lens = lists
    windows, cap, _ = params
    at, into, after = merges
    reads = (np.zeros(0, np.bool_), np.zeros(0), np.zeros((0, 6)))  # none
    lo = 0
    for q in range(at.shape[0]):
        hi = at[q]
        if hi > lo:
            part = (slot[lo:hi], ts[lo:hi], monetary[lo:hi], items[lo:hi])
            _run(part, users, lists, params, reads)
            lo = hi
        to = into[q, 0]
        _merge(times, values, lens, windows, cap, after[q, 0], to, into[q, 1])
        last[to], n[to] = after[q, 0], np.int64(after[q, 1])


@numba.njit(cache=True, nogil=True)
def _merge(times, values, lens, windows, cap, last, to, frm):  # type: ignore[no-untyped-def]
    """``RiskTracker.merge_counts`` of slot ``frm``'s lists into slot ``to``'s, on the arrays
    of :func:`.velocitybytes.read_lists` (``last``: the merged profile's last event time)."""
    for k in range(2):  # events and purchases: (time, count), each event counted again
        cutoff = last - windows[k]
        t, c = times[k, to], values[k, to]
        m = lens[to, k]
        for q in range(lens[frm, k]):
            for _ in range(values[k, frm, q]):
                m = _add_count(t, c, m, times[k, frm, q], cutoff, cap)
        if m > 0 and t[0] <= cutoff:
            m = _prune(t, c, m, cutoff)
        lens[to, k] = m
    cutoff = last - windows[2]  # items: (time, item) pairs, each seen again
    t, v = times[2, to], values[2, to]
    m = lens[to, 2]
    for q in range(lens[frm, 2]):
        m = _add_item(t, v, m, times[2, frm, q], values[2, frm, q], cutoff, cap)
    if m > 0 and t[0] <= cutoff:
        m = _prune(t, v, m, cutoff)
    lens[to, 2] = m

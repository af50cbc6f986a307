"""A batch's velocity counts in compiled code, by the rules of :mod:`liveprofile.profile.risk`.

Counting each applied event into its profile's velocity lists in Python
(:meth:`~liveprofile.profile.risk.RiskTracker.count`, event by event) cost about a tenth of the
Kafka worker's time. :func:`count_velocity` lays the lists of the batch's profiles out as arrays
(each list is at most ``risk.cap`` entries), runs every applied event through one compiled loop
in the batch's order, and writes the lists back: the same lists, entry for entry, as counting
event by event (times stored as :func:`~liveprofile.profile.risk.stamp` stores them). Item
groups are laid out as (time, item) pairs in (time, item) order, which is how the groups and
their sorted members read one after the other. The lists go in and out as the MessagePack a
profile's row holds for them (:mod:`.velocitybytes`), not as Python lists: a batch without the
Python lifecycle's stops leaves them as those bytes in the profiles
(:meth:`~liveprofile.engine.lazyprofiles.ProfileMap.hold_velocity`), read by the next batch as
they are.

The compiled step takes it for every batch without an anomaly detector (which reads the counts
event by event; then :class:`~liveprofile.engine.riskcounts.RiskCounts` counts in Python): in a
batch with the Python lifecycle's stops, for the events the stops left uncounted (a stop counts the
events of the profiles it changes, up to it).

>>> from liveprofile.config import ProfileConfig, RiskConfig
>>> from liveprofile.events import Event
>>> from liveprofile.profile.state import ProfileUpdater
>>> config = RiskConfig(cap=3)
>>> updater = ProfileUpdater(ProfileConfig(), config)
>>> events = [(0.0, "i0"), (30.0, "i1"), (50.0, "i0"), (59.0, None), (20.0, "i2")]
>>> p = updater.new("u1", 0.0)
>>> for i, (ts, item) in enumerate(events):
...     updater.apply(p, Event(f"e{i}", "u1", "purchase", ts, item_id=item, value=1.0))
>>> lists = count_lists(updater.risk, [([], [], [])], [0] * 5, [ts for ts, _ in events],
...                     [True] * 5, [-1 if i is None else velocity_item(i) for _, i in events])
>>> lists[0] == (p.v_events, p.v_purchases, p.v_items)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numba
import numpy as np

from liveprofile.engine.lazyprofiles import ProfileMap
from liveprofile.engine.velocitybytes import decode_lists, encode_lists, read_lists, write_lists
from liveprofile.profile.risk import Counts, ItemGroups, RiskTracker, stamp, velocity_item

if TYPE_CHECKING:
    from liveprofile.engine.riskcounts import RiskCounts
    from liveprofile.profile.state import Profile

__all__ = ["count_lists", "count_velocity", "velocity_item"]
_Lists = tuple[Counts, Counts, ItemGroups]


def count_velocity(
    risk: RiskCounts, profiles: dict[str, Profile], hi: int, hold: bool = False
) -> None:
    """Count the applied events before event ``hi`` that ``risk`` has not counted, into the
    velocity lists of their users' profiles (``risk.names[e]``: the user of event ``e``).

    The lists go through the compiled counting as the MessagePack a profile's row holds for
    them (:mod:`.velocitybytes`); with ``hold`` (and a
    :class:`~liveprofile.engine.lazyprofiles.ProfileMap`) they stay those bytes in the
    profiles until something reads them, else they are decoded into the profiles."""
    ev = risk.ev
    applied = np.flatnonzero(ev.ok[:hi] & ~risk.counted[:hi])
    if not len(applied):
        return
    risk.counted[applied] = True
    rows = ev.urow[applied]
    users, first, slot = np.unique(rows, return_index=True, return_inverse=True)
    names = risk.names
    who = [names[e] for e in applied[first].tolist()]
    mapped = isinstance(profiles, ProfileMap)
    # as they are: only the velocity lists are read and written (see lazyprofiles.peek)
    chosen = [dict.__getitem__(profiles, u) for u in who]
    if mapped:
        parts = cast(ProfileMap, profiles).velocity_rows(who, chosen)
    else:
        parts = [encode_lists((p.v_events, p.v_purchases, p.v_items)) for p in chosen]
    lengths = np.fromiter(map(len, parts), np.int64, len(parts))
    starts = np.cumsum(lengths) - lengths
    tracker = risk.tracker
    times, values, lens = read_lists(b"".join(parts), starts, tracker.cap)
    last = np.array([risk.last[r] for r in users.tolist()], np.float64)
    counts = np.array([risk.n[r] for r in users.tolist()], np.int64)
    monetary = np.array(risk.monetary, np.bool_)[ev.type[applied]]
    _run(
        slot.astype(np.int64), ev.ts[applied].astype(np.float64), monetary,
        risk.crc[ev.icode[applied]].astype(np.int64), last, counts, times, values, lens,
        np.array(tracker.windows, np.float64), tracker.cap,
    )  # fmt: skip
    blob, offsets = write_lists(times, values, lens)
    if hold and mapped:
        held = cast(ProfileMap, profiles).hold_velocity
        begins = (offsets[:, 0] - 1).tolist()  # each user's array header
        ends = offsets[:, 3].tolist()
        within = (offsets - offsets[:, :1] + 1).tolist()
        for j, (u, p) in enumerate(zip(who, chosen, strict=True)):
            held(u, p, blob[begins[j] : ends[j]], within[j])
    else:
        for p, (events, purchases, items) in zip(chosen, decode_lists(blob), strict=True):
            p.v_events, p.v_purchases, p.v_items = events, purchases, items
        if mapped:
            cast(ProfileMap, profiles).settle_velocity(who)
    for j, r in enumerate(users.tolist()):
        risk.last[r], risk.n[r], risk.exists[r] = float(last[j]), int(counts[j]), True


def count_lists(
    tracker: RiskTracker,
    lists: Sequence[_Lists],
    slot: Any,
    ts: Any,
    monetary: Any,
    items: Any,
    last: Any = None,
    n: Any = None,
) -> list[_Lists]:
    """The velocity lists ``lists`` (one (events, purchases, items) per user) after counting
    events at times ``ts``, of users ``slot`` (an index into ``lists``), monetary or not, with
    an item's CRC32 or -1; ``last`` and ``n``: each user's last event time and event count
    before them (default: none yet), updated in place."""
    m = len(lists)
    cap = tracker.cap
    # every list's entries in one flat run (user by user), laid out with one assignment per
    # array rather than a few per user
    flat = [
        [pair for events, _, _ in lists for pair in events],
        [pair for _, purchases, _ in lists for pair in purchases],
        [(t, item) for _, _, kept in lists for t, members in kept for item in members],
    ]
    lens = np.empty((m, 3), np.int64)
    lens[:, 0] = [len(events) for events, _, _ in lists]
    lens[:, 1] = [len(purchases) for _, purchases, _ in lists]
    lens[:, 2] = [sum(map(_size, kept)) for _, _, kept in lists]
    width = max(cap, int(lens.max(initial=0))) + 1
    times, values = np.zeros((3, m, width)), np.zeros((3, m, width), np.int64)
    for k in range(3):
        if flat[k]:
            pairs = np.array(flat[k], np.float64).reshape(-1, 2)
            rows, at = _places(lens[:, k])
            times[k, rows, at] = pairs[:, 0]
            values[k, rows, at] = pairs[:, 1]
    last = np.zeros(m) if last is None else last
    n = np.zeros(m, np.int64) if n is None else n
    windows = np.array(tracker.windows, np.float64)
    _run(
        np.asarray(slot, np.int64), np.asarray(ts, np.float64), np.asarray(monetary, np.bool_),
        np.asarray(items, np.int64), last, n, times, values, lens, windows, cap,
    )  # fmt: skip
    # back to lists: each kind's entries in one flat run again, then cut user by user
    runs = []
    for k in range(3):
        rows, at = _places(lens[:, k])
        kept_t = times[k, rows, at].tolist()
        runs.append((list(map(stamp, kept_t)) if k < 2 else kept_t, values[k, rows, at].tolist()))
    out: list[_Lists] = []
    ends = np.cumsum(lens, axis=0).tolist()
    (e_t, e_n), (p_t, p_n), (i_t, i_v) = runs
    e0 = p0 = i0 = 0
    for e1, p1, i1 in ends:
        groups: ItemGroups = []
        previous = None
        for t, item in zip(i_t[i0:i1], i_v[i0:i1], strict=True):
            if t == previous:
                groups[-1][1].append(item)
            else:
                groups.append((stamp(t), [item]))
                previous = t
        events = list(zip(e_t[e0:e1], e_n[e0:e1], strict=True))
        out.append((events, list(zip(p_t[p0:p1], p_n[p0:p1], strict=True)), groups))
        e0, p0, i0 = e1, p1, i1
    return out


def _places(lens: Any) -> tuple[Any, Any]:
    """Row and column of each entry of rows holding ``lens[r]`` entries each, row by row.

    >>> rows, cols = _places(np.array([2, 0, 3]))
    >>> rows.tolist(), cols.tolist()
    ([0, 0, 2, 2, 2], [0, 1, 0, 1, 2])
    """
    rows = np.repeat(np.arange(len(lens)), lens)
    starts = np.cumsum(lens) - lens
    return rows, np.arange(len(rows)) - starts[rows]


def _size(group: tuple[Any, list[int]]) -> int:
    return len(group[1])


@numba.njit(cache=True, nogil=True)
def _run(slot, ts, monetary, items, last, n, times, values, lens, windows, cap):  # type: ignore[no-untyped-def]
    w_events, w_purchases, w_items = windows[0], windows[1], windows[2]
    et, pt, it = times[0], times[1], times[2]
    en, pn, ii = values[0], values[1], values[2]
    for k in range(slot.shape[0]):
        r, t = slot[k], ts[k]
        if n[r] == 0 or t > last[r]:
            last[r] = t
        n[r] += 1
        at = last[r]
        lens[r, 0] = _add_count(et[r], en[r], lens[r, 0], t, at - w_events, cap)
        cutoff = at - w_purchases
        if monetary[k]:
            lens[r, 1] = _add_count(pt[r], pn[r], lens[r, 1], t, cutoff, cap)
        elif lens[r, 1] > 0 and pt[r, 0] <= cutoff:
            lens[r, 1] = _prune(pt[r], pn[r], lens[r, 1], cutoff)
        cutoff = at - w_items
        if items[k] >= 0:
            lens[r, 2] = _add_item(it[r], ii[r], lens[r, 2], t, items[k], cutoff, cap)
        elif lens[r, 2] > 0 and it[r, 0] <= cutoff:
            lens[r, 2] = _prune(it[r], ii[r], lens[r, 2], cutoff)


@numba.njit(cache=True, nogil=True)
def _drop(t, v, m, k):  # type: ignore[no-untyped-def]
    """Remove the first ``k`` entries of ``(t, v)[:m]``; the new length."""
    for q in range(k, m):
        t[q - k] = t[q]
        v[q - k] = v[q]
    return m - k


@numba.njit(cache=True, nogil=True)
def _insert(t, v, m, at, ts, value):  # type: ignore[no-untyped-def]
    for q in range(m, at, -1):
        t[q] = t[q - 1]
        v[q] = v[q - 1]
    t[at] = ts
    v[at] = value
    return m + 1


@numba.njit(cache=True, nogil=True)
def _prune(t, v, m, cutoff):  # type: ignore[no-untyped-def]
    drop = 0
    while drop < m and t[drop] <= cutoff:
        drop += 1
    return _drop(t, v, m, drop) if drop else m


@numba.njit(cache=True, nogil=True)
def _add_count(t, c, m, ts, cutoff, cap):  # type: ignore[no-untyped-def]
    """``risk.add_count`` on (time, count) arrays of length ``m``; the new length."""
    if ts > cutoff:
        if m == 0 or ts > t[m - 1]:
            t[m] = ts
            c[m] = 1
            m += 1
        else:
            at = 0
            while t[at] < ts:
                at += 1
            if t[at] == ts:
                c[at] += 1
            else:
                m = _insert(t, c, m, at, ts, 1)
    if m > 0 and t[0] <= cutoff:
        m = _prune(t, c, m, cutoff)
    excess = -cap
    for q in range(m):
        excess += c[q]
    while excess > 0:
        if c[0] <= excess:
            excess -= c[0]
            m = _drop(t, c, m, 1)
        else:
            c[0] -= excess
            excess = 0
    return m


@numba.njit(cache=True, nogil=True)
def _add_item(t, v, m, ts, item, cutoff, cap):  # type: ignore[no-untyped-def]
    """``risk.add_item`` on (time, item) pairs of length ``m`` in (time, item) order."""
    newer = False
    for q in range(m):
        if v[q] == item:
            newer = t[q] >= ts
            if not newer:
                for s in range(q + 1, m):
                    t[s - 1] = t[s]
                    v[s - 1] = v[s]
                m -= 1
            break
    if ts > cutoff and not newer:
        at = 0
        while at < m and (t[at] < ts or (t[at] == ts and v[at] < item)):
            at += 1
        m = _insert(t, v, m, at, ts, item)
    if m > 0 and t[0] <= cutoff:
        m = _prune(t, v, m, cutoff)
    if m > cap:
        m = _drop(t, v, m, m - cap)
    return m

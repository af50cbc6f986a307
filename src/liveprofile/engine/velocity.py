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

The step counts every batch with it, in a batch with the Python lifecycle's stops the events
the stops left uncounted (a stop counts the events of the profiles it changes, up to it; with an
anomaly detector, every event before it). With an anomaly detector the same loop reads each
event as the detector sees it (:func:`_reading`: the counts in the windows ending at the user's
last event, the value, the hour and the gap since the user's previous event), and the detector
runs over those readings in the batch's order, compiled too
(:func:`~liveprofile.engine.halfspace.score_and_learn`): nothing is done per event in Python.

>>> from liveprofile.config import PipelineConfig, RiskConfig
>>> from liveprofile.engine.core import Core
>>> from liveprofile.events import Event
>>> core = Core(PipelineConfig(risk=RiskConfig(cap=3)))
>>> state = core.new_state()
>>> events = [(0.0, "i0"), (30.0, "i1"), (50.0, "i0"), (59.0, None), (20.0, "i2")]
>>> _ = core.step(state, [Event(f"e{i}", "u1", "purchase", ts, item_id=item, value=1.0)
...                       for i, (ts, item) in enumerate(events)])
>>> p = state.profiles["u1"]
>>> lists = count_lists(core.updater.risk, [([], [], [])], [0] * 5, [ts for ts, _ in events],
...                     [True] * 5, [-1 if i is None else velocity_item(i) for _, i in events])
>>> lists[0] == (p.v_events, p.v_purchases, p.v_items)
True
>>> p.v_events
[(30, 1), (50, 1), (59, 1)]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numba
import numpy as np
import numpy.typing as npt

from liveprofile.durations import DAY
from liveprofile.engine.halfspace import score_and_learn
from liveprofile.engine.lazyprofiles import ProfileMap
from liveprofile.engine.velocitybytes import decode_lists, encode_lists, read_lists, write_lists
from liveprofile.profile.risk import (
    LOG_GAP,
    LOG_VALUE,
    Counts,
    ItemGroups,
    RiskTracker,
    stamp,
    velocity_item,
)

if TYPE_CHECKING:
    from liveprofile.engine.riskcounts import RiskCounts
    from liveprofile.profile.state import Profile

__all__ = ["count_lists", "count_velocity", "velocity_item"]
_Lists = tuple[Counts, Counts, ItemGroups]
I64 = npt.NDArray[np.int64]
#: no anomaly readings (see :func:`_run`)
_NO_READS = (np.zeros(0, np.bool_), np.zeros(0), np.zeros((0, 6)))


def count_velocity(
    risk: RiskCounts, applied: I64, profiles: dict[str, Profile] | None = None, hold: bool = False
) -> None:
    """Count the ``applied`` events (in the batch's order) into the velocity lists of their
    users' profiles (``risk.names[e]``: the user of event ``e``), and score those the anomaly
    detector wants, in the same order: the velocity counts and each event's reading for the
    detector come out of one compiled loop, and the detector runs over the readings
    (:func:`~liveprofile.engine.halfspace.score_and_learn`).

    The profile objects are ``risk.profile_of``'s, or with ``profiles`` those of the dict as
    they are; then the lists go through the compiled counting as the MessagePack a profile's
    row holds for them (:mod:`.velocitybytes`), and with ``hold`` (and a
    :class:`~liveprofile.engine.lazyprofiles.ProfileMap`) they stay those bytes in the
    profiles until something reads them, else they are decoded into the profiles."""
    if not len(applied):
        return
    ev = risk.ev
    risk.counted[applied] = True
    rows = ev.urow[applied]
    users, first, slot = np.unique(rows, return_index=True, return_inverse=True)
    names = risk.names
    who = [names[e] for e in applied[first].tolist()]
    mapped = isinstance(profiles, ProfileMap)
    if profiles is None:
        chosen = list(map(risk.profile_of, who))
    else:  # as they are: only the velocity lists are read and written (see lazyprofiles.peek)
        chosen = [dict.__getitem__(profiles, u) for u in who]
    if mapped:
        parts = cast(ProfileMap, profiles).velocity_rows(who, chosen)
    else:
        parts = [encode_lists((p.v_events, p.v_purchases, p.v_items)) for p in chosen]
    lengths = np.fromiter(map(len, parts), np.int64, len(parts))
    starts = np.cumsum(lengths) - lengths
    tracker, scorer = risk.tracker, risk.scorer
    times, values, lens = read_lists(b"".join(parts), starts, tracker.cap)
    user_rows = users.tolist()
    last = np.array([risk.last[r] for r in user_rows], np.float64)
    counts = np.array([risk.n[r] for r in user_rows], np.int64)
    exists = np.array([risk.exists[r] for r in user_rows], np.bool_)
    wanted = None
    reads = _NO_READS
    if scorer is not None:
        wanted = np.array([scorer.wants(k) for k in risk.kinds], np.bool_)[ev.type[applied]]
        reads = (exists, ev.value[applied].astype(np.float64), np.zeros((len(applied), 6)))
    _run(
        event_columns(risk, applied, slot), (last, counts), (times, values, lens),
        (np.array(tracker.windows, np.float64), tracker.cap, risk.velocity), reads,
    )  # fmt: skip
    if risk.velocity:
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
    if scorer is not None and wanted is not None and wanted.any():
        scored = np.flatnonzero(wanted)
        scores = score_and_learn(scorer, reads[2][scored])
        # each user's anomaly: the score of its last event scored
        mine = slot[scored]
        latest = len(mine) - 1 - np.unique(mine[::-1], return_index=True)[1]
        for j, s in zip(mine[latest].tolist(), scores[latest].tolist(), strict=True):
            chosen[j].anomaly = s
    for j, r in enumerate(user_rows):
        risk.last[r], risk.n[r], risk.exists[r] = float(last[j]), int(counts[j]), True


def event_columns(risk: RiskCounts, applied: I64, slot: Any) -> tuple[Any, Any, Any, Any]:
    """The ``events`` of :func:`_run` for the ``applied`` events, of users ``slot``."""
    ev = risk.ev
    monetary = np.array(risk.monetary, np.bool_)[ev.type[applied]]
    items = risk.crc[ev.icode[applied]].astype(np.int64)
    return slot.astype(np.int64), ev.ts[applied].astype(np.float64), monetary, items


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
    counted = (
        np.asarray(slot, np.int64), np.asarray(ts, np.float64), np.asarray(monetary, np.bool_),
        np.asarray(items, np.int64),
    )  # fmt: skip
    _run(counted, (last, n), (times, values, lens), (windows, cap, True), _NO_READS)
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
def _run(events, users, lists, params, reads):  # type: ignore[no-untyped-def]
    """Count event ``k`` (of user ``slot[k]``, at ``ts[k]``) into its user's lists, in order
    (with ``counting``; else the lists are only read). ``events``: (slot, ts, monetary, item
    CRC or -1) per event; ``users``: (last event time, event count) per user, updated;
    ``lists``: (times, values, lens) of the three lists per user, updated; ``params``:
    (windows, cap, counting). ``reads``: (whether each user has a profile, each event's value
    (NaN: none), a row per event for the anomaly detector's reading of it, :func:`_reading`),
    or empty arrays for no readings."""
    slot, ts, monetary, items = events
    last, n = users
    times, values, lens = lists
    windows, cap, counting = params
    w_events, w_purchases, w_items = windows[0], windows[1], windows[2]
    et, pt, it = times[0], times[1], times[2]
    en, pn, ii = values[0], values[1], values[2]
    exists, value, seen = reads
    read = seen.shape[0] > 0
    for k in range(slot.shape[0]):
        r, t = slot[k], ts[k]
        if read:  # the event's value and the gap since the user's last event, as it was
            seen[k, 3] = value[k]
            seen[k, 5] = t - last[r] if exists[r] else np.nan
            exists[r] = True
        if n[r] == 0 or t > last[r]:
            last[r] = t
        n[r] += 1
        at = last[r]
        if counting:
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
        if read:
            _reading(seen[k], t, at, (et[r], en[r], pt[r], pn[r], it[r], lens[r]), windows, cap)


@numba.njit(cache=True, nogil=True)
def _reading(row, t, at, mine, windows, cap):  # type: ignore[no-untyped-def]
    """``AnomalyScorer`` features of an event at ``t`` (``row[3]``: its value, NaN for none;
    ``row[5]``: the gap since the user's previous event, NaN for none) whose user's lists
    ``mine`` (events' times and counts, purchases' times and counts, items' times, lengths),
    counted, end at ``at``: the velocity counts over ``cap``, log value, hour, log gap."""
    et, en, pt, pn, it, lens = mine
    counts = np.zeros(3)
    for q in range(lens[0]):
        if et[q] > at - windows[0]:
            counts[0] += en[q]
    for q in range(lens[1]):
        if pt[q] > at - windows[1]:
            counts[1] += pn[q]
    for q in range(lens[2]):
        if it[q] > at - windows[2]:
            counts[2] += 1
    for j in range(3):
        row[j] = _least(counts[j] / cap, 1.0)
    value, gap = row[3], row[5]
    row[3] = 0.0 if np.isnan(value) else _least(math.log1p(_most(value, 0.0)) / LOG_VALUE, 1.0)
    row[4] = (t % DAY) / DAY
    row[5] = 1.0 if np.isnan(gap) else _least(math.log1p(_most(gap, 0.0)) / LOG_GAP, 1.0)


@numba.njit(cache=True, nogil=True)
def _least(a, b):  # type: ignore[no-untyped-def]
    """Python's ``min(a, b)``, to the sign of a zero."""
    return b if b < a else a


@numba.njit(cache=True, nogil=True)
def _most(a, b):  # type: ignore[no-untyped-def]
    """Python's ``max(a, b)``, to the sign of a zero."""
    return b if b > a else a


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

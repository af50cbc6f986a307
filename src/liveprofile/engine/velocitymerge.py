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

import numba
import numpy as np

from liveprofile.engine.lazyprofiles import ProfileMap
from liveprofile.engine.velocity import _add_count, _add_item, _prune
from liveprofile.engine.velocitybytes import read_lists, write_lists
from liveprofile.profile.risk import RiskTracker


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
    _merge(times, values, lens, windows, tracker.cap, last)
    blob, offsets = write_lists(
        np.ascontiguousarray(times[:, :1]), np.ascontiguousarray(values[:, :1]), lens[:1]
    )
    at = offsets[0]
    within = (at - at[0] + 1).tolist()  # as count_velocity holds them
    profiles.hold_velocity(user, into, blob[int(at[0]) - 1 : int(at[3])], within)
    if into.anomaly is None:
        into.anomaly = other.anomaly


@numba.njit(cache=True, nogil=True)
def _merge(times, values, lens, windows, cap, last):  # type: ignore[no-untyped-def]
    """``RiskTracker.merge_counts`` of user 1's lists into user 0's, on the arrays of
    :func:`.velocitybytes.read_lists` (``last``: the merged profile's last event time)."""
    for k in range(2):  # events and purchases: (time, count), each event counted again
        cutoff = last - windows[k]
        t, c = times[k, 0], values[k, 0]
        m = lens[0, k]
        for q in range(lens[1, k]):
            for _ in range(values[k, 1, q]):
                m = _add_count(t, c, m, times[k, 1, q], cutoff, cap)
        if m > 0 and t[0] <= cutoff:
            m = _prune(t, c, m, cutoff)
        lens[0, k] = m
    cutoff = last - windows[2]  # items: (time, item) pairs, each seen again
    t, v = times[2, 0], values[2, 0]
    m = lens[0, 2]
    for q in range(lens[1, 2]):
        m = _add_item(t, v, m, times[2, 1, q], values[2, 1, q], cutoff, cap)
    if m > 0 and t[0] <= cutoff:
        m = _prune(t, v, m, cutoff)
    lens[0, 2] = m

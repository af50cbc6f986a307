"""Risk signals per user: the most recent events, velocity counts and an anomaly score.

Everything follows event time. The velocity counts are taken over windows that end at the
user's last event (or a later time ``at``): events in ``events_window`` (``events_per_min``),
purchases in ``purchases_window`` (``purchases_per_hour``) and distinct items in
``items_window`` (``distinct_items_10m``); the names follow the default windows 1m, 1h and 10m.

The profile keeps only what the windows still need, and at most ``cap`` of it: the newest
``cap`` events (stored as (time, count) pairs, so events sharing a timestamp take one pair), the
newest ``cap`` purchases and the ``cap`` items seen most recently. A count therefore reads
``min(true count, cap)``: it saturates at ``cap`` and is exact below it. What is kept is the same
whatever order the events arrive in (the newest ``cap`` of all events still in the window), so
the counts are exactly order-independent, as are the recent events (the newest ``recent``).

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.core import Core
>>> from liveprofile.events import Event
>>> core = Core(PipelineConfig(risk=RiskConfig(recent=2, cap=3)))
>>> state = core.new_state()
>>> _ = core.step(state, [
...     Event(f"e{i}", "u1", "purchase", ts, item_id=f"i{i % 2}", value=1.0)
...     for i, ts in enumerate([0.0, 30.0, 50.0, 59.0, 20.0])
... ])
>>> p, updater = state.profiles["u1"], core.updater
>>> updater.risk.velocity(p)
{'events_per_min': 3, 'purchases_per_hour': 3, 'distinct_items_10m': 2}
>>> [(r["ts"], r["item_id"]) for r in updater.risk.recent(p)]
[(59.0, 'i1'), (50.0, 'i0')]
>>> updater.risk.velocity(p, at=100.0)["events_per_min"]  # the minute (40, 100]: 50 and 59
2
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect_left, insort
from typing import TYPE_CHECKING, Any, cast

from liveprofile.config import RiskConfig
from liveprofile.durations import DAY
from liveprofile.errors import StateVersionError
from liveprofile.learn.base import Learner
from liveprofile.learn.registry import dump_learner, load_learner

if TYPE_CHECKING:
    from liveprofile.profile.state import Profile

#: an event time as stored: an int when it is whole (5 bytes of MessagePack instead of 9)
Stamp = int | float
#: (event time, events at that time)
Counts = list[tuple[Stamp, int]]
#: (event time, sorted CRC32s of the items last seen at that time)
ItemGroups = list[tuple[Stamp, list[int]]]
#: (event time, type, item, value) of one recent event
Recent = tuple[Stamp, str, str | None, float | None]
VELOCITY = ("events_per_min", "purchases_per_hour", "distinct_items_10m")


def velocity_item(item_id: str) -> int:
    """How the velocity counts name an item: the CRC32 of its id.

    >>> velocity_item("i1") == zlib.crc32(b"i1")
    True
    """
    return zlib.crc32(item_id.encode())


def stamp(ts: float) -> Stamp:
    """``ts`` as stored: whole seconds become an int.

    >>> stamp(1700000000.0), stamp(1.5)
    (1700000000, 1.5)
    """
    return int(ts) if float(ts).is_integer() else ts


def add_count(log: Counts, ts: float, cutoff: float, cap: int) -> None:
    """Count one event at ``ts`` into ``log`` (ascending by time), keep only the times after
    ``cutoff`` and only the newest ``cap`` events.

    >>> log: Counts = []
    >>> for ts in (5, 7, 7, 3, 9):
    ...     add_count(log, ts, cutoff=4, cap=3)
    >>> log
    [(7, 2), (9, 1)]
    """
    if ts > cutoff:
        newest = log[-1][0] if log else -math.inf
        if ts > newest:
            log.append((stamp(ts), 1))
        else:
            at = len(log) - 1 if ts == newest else bisect_left(log, ts, key=_time)
            if log[at][0] == ts:
                log[at] = (log[at][0], log[at][1] + 1)
            else:
                log.insert(at, (stamp(ts), 1))
    if log and log[0][0] <= cutoff:
        prune(log, cutoff)
    excess = -cap
    for _, n in log:
        excess += n
    while excess > 0:
        t, n = log[0]
        if n <= excess:
            del log[0]
            excess -= n
        else:
            log[0] = (t, n - excess)
            excess = 0


def count_since(log: Counts, cutoff: float) -> int:
    """Events in ``log`` after ``cutoff``."""
    return sum(n for t, n in log if t > cutoff)


def add_item(groups: ItemGroups, ts: float, item: int, cutoff: float, cap: int) -> None:
    """Record that ``item`` (a CRC32) was seen at ``ts``: each item is kept once, at its latest
    time after ``cutoff``, and only the ``cap`` items seen most recently are kept.

    >>> groups: ItemGroups = []
    >>> for ts, item in ((5, 1), (6, 2), (5, 3), (4, 2), (8, 1)):
    ...     add_item(groups, ts, item, cutoff=0, cap=2)
    >>> groups
    [(6, [2]), (8, [1])]
    """
    newer = False
    for k, (t, members) in enumerate(groups):
        if item in members:
            newer = t >= ts
            if not newer:
                rest = [m for m in members if m != item]
                if rest:
                    groups[k] = (t, rest)
                else:
                    del groups[k]
            break
    if ts > cutoff and not newer:
        at = bisect_left(groups, ts, key=_time)
        if at < len(groups) and groups[at][0] == ts:
            insort(groups[at][1], item)
        else:
            groups.insert(at, (stamp(ts), [item]))
    if groups and groups[0][0] <= cutoff:
        prune(groups, cutoff)
    excess = -cap
    for _, members in groups:
        excess += len(members)
    while excess > 0:
        t, members = groups[0]
        if len(members) <= excess:
            del groups[0]
            excess -= len(members)
        else:
            groups[0] = (t, members[excess:])
            excess = 0


def distinct_since(groups: ItemGroups, cutoff: float) -> int:
    """Items in ``groups`` last seen after ``cutoff``."""
    return sum(len(members) for t, members in groups if t > cutoff)


def prune(log: list[Any], cutoff: float) -> None:
    """Drop the entries of ``log`` (ascending by time) at or before ``cutoff``."""
    drop = 0
    while drop < len(log) and log[drop][0] <= cutoff:
        drop += 1
    if drop:
        del log[:drop]


def add_recent(ring: list[Recent], entry: Recent, size: int) -> None:
    """Insert ``entry`` at its place in time and keep the newest ``size`` entries.

    >>> ring: list[Recent] = []
    >>> for ts in (3, 1, 2, 4):
    ...     add_recent(ring, (ts, "view", None, None), size=3)
    >>> [ts for ts, *_ in ring]
    [2, 3, 4]
    """
    if size <= 0:
        return
    newest = ring[-1] if ring else None
    if newest is None or _recent_order(entry) >= _recent_order(newest):
        ring.append(entry)  # the usual case: events come in time order
    else:
        insort(ring, entry, key=_recent_order)
    if len(ring) > size:
        del ring[: len(ring) - size]


def _time(entry: tuple[Stamp, Any]) -> Stamp:
    return entry[0]


def _recent_order(entry: Recent) -> tuple[Stamp, str, bool, str, bool, float]:
    # a total order, so which of two events at the same time falls off never depends on arrival
    ts, kind, item, value = entry
    return (ts, kind, item is not None, item or "", value is not None, value or 0.0)


class RiskTracker:
    """Reads, and merges, the recent events and velocity counts of profiles according to a
    :class:`RiskConfig`; the step counts them (``liveprofile.engine.velocity``) by the rule of
    :meth:`count`. See the module's example.
    """

    def __init__(self, config: RiskConfig) -> None:
        self.config = config
        self.cap = config.cap
        self.windows = (config.events_window_s, config.purchases_window_s, config.items_window_s)
        self.velocity_on = config.velocity

    def count(self, p: Profile, ts: float, monetary: bool, item: int | None, last: float) -> None:
        """Count an event at ``ts`` (of a monetary type or not, with the CRC32 of its item or
        None) into ``p``'s velocity lists when the profile's last event time is ``last``."""
        cap = self.cap
        w_events, w_purchases, w_items = self.windows
        add_count(p.v_events, ts, last - w_events, cap)
        # every list is pruned on every event, so what is stored depends only on the events
        if monetary:
            add_count(p.v_purchases, ts, last - w_purchases, cap)
        elif p.v_purchases and p.v_purchases[0][0] <= last - w_purchases:
            prune(p.v_purchases, last - w_purchases)
        if item is not None:
            add_item(p.v_items, ts, item, last - w_items, cap)
        elif p.v_items and p.v_items[0][0] <= last - w_items:
            prune(p.v_items, last - w_items)

    def merge(self, into: Profile, other: Profile) -> None:
        """Fold ``other``'s risk fields into ``into`` (identity merge; ``into.last_ts`` is
        already the later of the two): the result is what one profile of both users' events
        would keep."""
        for entry in other.recent:
            add_recent(into.recent, entry, self.config.recent)
        self.merge_counts(into, other, into.last_ts)

    def merge_counts(self, into: Profile, other: Profile, last: float) -> None:
        """The velocity lists and anomaly score of :meth:`merge` (``last``: the merged
        profile's last event time); the recent events are the caller's."""
        cap = self.cap
        w_events, w_purchases, w_items = self.windows
        for log, mine, window in (
            (other.v_events, into.v_events, w_events),
            (other.v_purchases, into.v_purchases, w_purchases),
        ):
            for ts, n in log:
                for _ in range(n):
                    add_count(mine, ts, last - window, cap)
            if mine and mine[0][0] <= last - window:
                prune(mine, last - window)
        for ts, members in other.v_items:
            for item in members:
                add_item(into.v_items, ts, item, last - w_items, cap)
        if into.v_items and into.v_items[0][0] <= last - w_items:
            prune(into.v_items, last - w_items)
        if into.anomaly is None:
            into.anomaly = other.anomaly

    def velocity(self, p: Profile, at: float | None = None) -> dict[str, int]:
        """The velocity counts in the windows ending at ``at`` (default and earliest: the last
        event), each at most ``cap``."""
        at = p.last_ts if at is None else max(at, p.last_ts)
        w_events, w_purchases, w_items = self.windows
        return {
            "events_per_min": count_since(p.v_events, at - w_events),
            "purchases_per_hour": count_since(p.v_purchases, at - w_purchases),
            "distinct_items_10m": distinct_since(p.v_items, at - w_items),
        }

    def recent(self, p: Profile) -> list[dict[str, Any]]:
        """The recent events, newest first."""
        return [
            {"ts": float(ts), "type": kind, "item_id": item, "value": value}
            for ts, kind, item, value in reversed(p.recent)
        ]


class AnomalyScorer:
    """One online anomaly detector for a pipeline: River's HalfSpaceTrees with a fixed seed.

    Each event of the configured types is described by six features in [0, 1]
    (:data:`FEATURES`): the three velocity counts over ``cap``, log value, hour of day (UTC)
    and log time since the user's previous event, read in compiled code with the velocity
    counts (``liveprofile.engine.velocity``). It is scored first, then learned, and the score
    (higher: more unusual) goes into the profile. Scores are 0 until the detector has seen one
    ``window_size`` of events. The step runs the detector's trees over a batch's readings in
    compiled code (``liveprofile.engine.halfspace``), and keeps River's detector as River would.

    >>> scorer = AnomalyScorer(RiskConfig(anomaly=True, window_size=5))
    >>> again = AnomalyScorer.load(scorer.config, scorer.dump())
    >>> again.dump() == scorer.dump(), again.wants("view")
    (True, True)
    """

    def __init__(self, config: RiskConfig, detector: Any = None) -> None:
        from river.anomaly import HalfSpaceTrees

        self.config = config
        self._types = frozenset(config.anomaly_types)
        if detector is None:
            detector = HalfSpaceTrees(
                n_trees=config.trees,
                height=config.height,
                window_size=config.window_size,
                seed=config.seed,
            )
        self.detector = detector
        #: the step's arrays of the detector's trees (``engine.halfspace.Trees``), once made
        self.compiled: Any = None

    def wants(self, kind: str) -> bool:
        """Whether events of this type are scored."""
        return not self._types or kind in self._types

    def dump(self) -> bytes:
        """Versioned bytes of the detector (the River checkpoint envelope of the learners)."""
        # the envelope only needs a River object; the detector is not a classifier
        return dump_learner(cast(Learner, self.detector))

    @classmethod
    def load(cls, config: RiskConfig, blob: bytes) -> AnomalyScorer:
        """The detector saved by :meth:`dump`."""
        from river.anomaly import HalfSpaceTrees

        detector = load_learner(blob)
        if not isinstance(detector, HalfSpaceTrees):
            raise StateVersionError(
                f"the stored anomaly detector is a {type(detector).__name__}, not HalfSpaceTrees"
            )
        return cls(config, detector)


#: the detector's features, each in [0, 1]: the velocity counts over ``cap``, the value and
#: the gap since the user's previous event (seconds) on log scales, the hour of day
FEATURES = ("events", "purchases", "items", "value", "hour", "gap")
#: log1p of the value and of the gap that map to 1.0
LOG_VALUE = math.log1p(1000.0)
LOG_GAP = math.log1p(30 * DAY)

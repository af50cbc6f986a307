"""Velocity counts and anomaly scores of a batch's applied events, in Python, in batch order.

:class:`RiskCounts` counts the velocity and scores the anomaly detector on each applied event,
in the order of the batch, as ``RiskTracker.apply`` does. The compiled step uses it for what the
compiled counts (:mod:`liveprofile.engine.velocity`) do not cover: with an anomaly detector every
event in turn (:meth:`RiskCounts.upto`); at a stop of the Python lifecycle
(:class:`~liveprofile.engine.links.Stops`) the events of the users it changes
(:meth:`RiskCounts.rows`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from liveprofile.engine import layout as L
from liveprofile.engine.codes import CodeTables
from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.records import Events, Users
from liveprofile.events.schema import Event
from liveprofile.profile.risk import AnomalyScorer, RiskTracker, count_since, distinct_since
from liveprofile.profile.state import Profile

I64 = npt.NDArray[np.int64]


def velocity_at(tracker: RiskTracker, p: Profile, at: float) -> dict[str, int]:
    """``RiskTracker.velocity`` in the windows ending at ``at`` exactly."""
    w_events, w_purchases, w_items = tracker.windows
    return {
        "events_per_min": count_since(p.v_events, at - w_events),
        "purchases_per_hour": count_since(p.v_purchases, at - w_purchases),
        "distinct_items_10m": distinct_since(p.v_items, at - w_items),
    }


class RiskCounts:
    """Velocity counts and anomaly scores of the applied events, counted in their order up to a
    point (:meth:`upto`); ``profile_of`` gives the profile object the counts of a user go on.

    ``last``, ``n`` and ``exists`` follow each user row's last event time, event count and
    whether it has a profile, from the rows before the batch."""

    def __init__(
        self,
        tracker: RiskTracker,
        scorer: AnomalyScorer | None,
        tables: CodeTables,
        ev: Events,
        names: list[str],
        U: Users,
        profile_of: Callable[[str], Profile],
    ) -> None:
        self.tracker, self.scorer, self.ev, self.names = tracker, scorer, ev, names
        self.profile_of = profile_of
        self.velocity = tracker.velocity_on
        self.last: list[float] = U.pf[:, L.P_LAST].tolist()
        self.n: list[int] = U.pi[:, L.P_N].tolist()
        self.exists: list[bool] = U.pi[:, L.P_EXISTS].astype(bool).tolist()
        self.monetary = tables.monetary.tolist()
        self.kinds = tables.types.names
        self.crc = np.append(tables.item_crc[: len(tables.items)], -1)  # -1: no item
        self.counted = np.zeros(len(ev.ok), np.bool_)
        #: the events of each user row (a superset, once ``moved``), made when first needed
        self._groups: dict[int, I64] | None = None

    def reset(self, r: int, p: Profile | None) -> None:
        """Row ``r`` now holds ``p`` (None: no profile)."""
        if p is None:
            self.last[r], self.n[r], self.exists[r] = 0.0, 0, False
        else:
            self.last[r], self.n[r], self.exists[r] = p.last_ts, p.n, True

    def upto(self, hi: int) -> None:
        """Count the applied events before event ``hi`` not counted yet."""
        ev = self.ev
        self._count(np.flatnonzero(ev.ok[:hi] & ~self.counted[:hi]))

    def rows(self, rows: list[int], hi: int) -> None:
        """Count the applied events of user ``rows`` before event ``hi`` not counted yet (the
        velocity counts of a profile depend on its own events only, in their order)."""
        ev, groups = self.ev, self._groups
        if groups is None:
            groups = self._groups = _by_row(ev.urow)
        parts = [g for g in map(groups.get, rows) if g is not None]  # one or two
        if not parts:
            return
        mine = parts[0] if len(parts) == 1 else np.unique(np.concatenate(parts))
        mine = mine[mine < hi]
        now = ev.urow[mine]
        of_rows = now == rows[0]
        for r in rows[1:]:
            of_rows |= now == r
        self._count(mine[ev.ok[mine] & ~self.counted[mine] & of_rows])

    def moved(self, events: I64, row: int) -> None:
        """``events`` are now the events of user row ``row`` (``Stops._follow``)."""
        if self._groups is not None:
            self._groups[row] = np.concatenate([self._groups.get(row, events[:0]), events])

    def _count(self, applied: I64) -> None:
        if not len(applied):
            return
        ev = self.ev
        self.counted[applied] = True
        count, scorer, tracker = self.tracker.count, self.scorer, self.tracker
        last, n, exists, names = self.last, self.n, self.exists, self.names
        monetary, kinds, profile_of = self.monetary, self.kinds, self.profile_of
        rows = ev.urow[applied].tolist()
        items = self.crc[ev.icode[applied]].tolist()
        types = ev.type[applied].tolist()
        values = ev.value[applied].tolist()
        for e, r, ts, kind, item, value in zip(
            applied.tolist(), rows, ev.ts[applied].tolist(), types, items, values, strict=True
        ):
            gap = (ts - last[r] if exists[r] else None) if scorer is not None else None
            if n[r] == 0 or ts > last[r]:
                last[r] = ts
            n[r] += 1
            exists[r] = True
            p = profile_of(names[e])
            if self.velocity:
                count(p, ts, monetary[kind], None if item < 0 else item, last[r])
            if scorer is not None and scorer.wants(kinds[kind]):
                point = Event("", "", kinds[kind], ts, value=None if value != value else value)
                p.anomaly = scorer.score(point, velocity_at(tracker, p, last[r]), gap)


def _by_row(urow: I64) -> dict[int, I64]:
    """The events of each user row, in order."""
    order = np.argsort(urow, kind="stable")
    rows = urow[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]).tolist() if len(rows) else []
    ends = [*starts[1:], len(rows)]
    return {int(rows[s]): order[s:e] for s, e in zip(starts, ends, strict=True)}


class StandIns(dict[str, Profile]):
    """The objects the velocity counts and anomaly scores of a batch with the lifecycle's stops
    go on, by user: the profile, or a stand-in until the lifecycle makes it; what a stand-in
    counted is carried onto the profile (:meth:`take`, :meth:`finish`)."""

    def __init__(self, profiles: dict[str, Profile]) -> None:
        super().__init__()
        self.profiles = profiles

    def profile_of(self, user: str) -> Profile:
        p = self.get(user)
        if p is None:
            p = self.profiles.get(user)
            if p is None:
                p = Profile(user=user, anchor=0.0, first_ts=0.0, last_ts=0.0)
            self[user] = p
        return p

    def take(self, user: str, p: Profile) -> None:
        """``p`` is ``user``'s profile now (its row written back): the counts go on it."""
        stand_in = self.get(user)
        if stand_in is not None and stand_in is not p:
            _carry(stand_in, p)
        self[user] = p

    def finish(self) -> None:
        """After the final rows are stored: the stand-ins' counts onto the profiles."""
        profiles = self.profiles
        for u, held in self.items():
            p = peek(profiles, u)  # most are the profile itself: no need to decode it
            if p is not None and p is not held:
                _carry(held, profiles[u])


def _carry(held: Profile, p: Profile) -> None:
    """The velocity counts and anomaly score counted on a stand-in, onto the profile."""
    p.v_events, p.v_purchases, p.v_items = held.v_events, held.v_purchases, held.v_items
    if held.anomaly is not None:
        p.anomaly = held.anomaly

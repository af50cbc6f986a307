"""Velocity counts and anomaly scores of a batch's applied events, in batch order.

:class:`RiskCounts` follows which applied events are counted and hands the rest to the compiled
counts (:func:`~liveprofile.engine.velocity.count_velocity`, which with an anomaly detector also
reads each event's features and runs the detector's trees over them): at a stop of the Python
lifecycle (:class:`~liveprofile.engine.links.Stops`) the events of the users it changes
(:meth:`RiskCounts.rows`), or with an anomaly detector every event before it
(:meth:`RiskCounts.upto`). :class:`StandIns` are the objects the counts go on until the
lifecycle makes the profile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from liveprofile.engine import layout as L
from liveprofile.engine.codes import CodeTables
from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.records import Events, Users
from liveprofile.engine.velocity import count_velocity
from liveprofile.profile.risk import AnomalyScorer, RiskTracker
from liveprofile.profile.state import Profile

if TYPE_CHECKING:
    from liveprofile.engine.velocitymerge import Merge

I64 = npt.NDArray[np.int64]


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
        #: velocity lists to merge at logins, with the events before them (``velocitymerge``)
        self.merges: list[Merge] = []

    def reset(self, r: int, p: Profile | None) -> None:
        """Row ``r`` now holds ``p`` (None: no profile)."""
        if p is None:
            self.last[r], self.n[r], self.exists[r] = 0.0, 0, False
        else:
            self.last[r], self.n[r], self.exists[r] = p.last_ts, p.n, True

    def upto(self, hi: int) -> None:
        """Count the applied events before event ``hi`` not counted yet."""
        ev = self.ev
        count_velocity(self, np.flatnonzero(ev.ok[:hi] & ~self.counted[:hi]))

    def rows(self, rows: list[int], hi: int) -> None:
        """Count the applied events of user ``rows`` before event ``hi`` not counted yet (the
        velocity counts of a profile depend on its own events only, in their order)."""
        assert not self.merges, "velocitymerge.count_merges first"
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
        count_velocity(self, mine[ev.ok[mine] & ~self.counted[mine] & of_rows])

    def moved(self, events: I64, row: int) -> None:
        """``events`` are now the events of user row ``row`` (``Stops._follow``)."""
        if self._groups is not None:  # (the kernel may have moved some of them already)
            self._groups[row] = np.union1d(self._groups.get(row, events[:0]), events)


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

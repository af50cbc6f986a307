"""Where a profile stands in the population: RFM scores (1-5) from running histograms.

Frequency (purchases) and monetary value are counted in logarithmic bins, recency by the day of
the last event; every profile change moves one count per histogram, so scores cost O(bins) to
read and nothing to keep up to date beyond a few additions per event.

>>> pop = Population()
>>> for purchases, money, last in [(1, 10.0, 0.0), (5, 80.0, 86400.0), (20, 900.0, 172800.0)]:
...     pop.move(None, (purchases, money, last))
>>> pop.scores((20, 900.0, 172800.0)), pop.scores((1, 10.0, 0.0))
((5, 5, 5), (1, 1, 1))
"""

from __future__ import annotations

import math

import msgspec

from liveprofile.durations import DAY
from liveprofile.profile.state import Profile

#: what the histograms need of a profile: purchases, money spent, time of the last event
Standing = tuple[int, float, float]
BINS = 64


def standing(p: Profile) -> Standing:
    return p.purchases, p.monetary, p.last_ts


def _log_bin(x: float) -> int:
    if not x < math.inf:  # a sum that overflowed in a store written before values were bounded
        return BINS - 1 if x == math.inf else 0
    return min(BINS - 1, int(4 * math.log2(1 + max(x, 0.0))))


class Population(msgspec.Struct):
    """Histograms of frequency, monetary value and last-event day over all profiles."""

    frequency: list[int] = msgspec.field(default_factory=lambda: [0] * BINS)
    monetary: list[int] = msgspec.field(default_factory=lambda: [0] * BINS)
    last_day: dict[int, int] = {}

    def to_bytes(self) -> bytes:
        """The population as stored, its days in order: the bytes do not depend on the order
        in which profiles moved (batch boundaries, the engine, erasures and expiry).

        >>> a, b = Population(), Population()
        >>> a.move(None, (1, 5.0, 86400.0)); a.move(None, (1, 5.0, 0.0))
        >>> b.move(None, (1, 5.0, 0.0)); b.move(None, (1, 5.0, 86400.0))
        >>> a.to_bytes() == b.to_bytes(), list(a.last_day) == list(b.last_day)
        (True, False)
        """
        days = dict(sorted(self.last_day.items()))
        return msgspec.msgpack.encode(msgspec.structs.replace(self, last_day=days))

    def move(self, old: Standing | None, new: Standing | None) -> None:
        """Replace one profile's old standing (None for a new profile) by its new one (None
        for a deleted profile)."""
        if old is not None:
            if old == new:
                return
            self.frequency[_log_bin(old[0])] -= 1
            self.monetary[_log_bin(old[1])] -= 1
            day = int(old[2] // DAY)
            left = self.last_day[day] - 1
            if left:
                self.last_day[day] = left
            else:
                del self.last_day[day]
        if new is None:
            return
        self.frequency[_log_bin(new[0])] += 1
        self.monetary[_log_bin(new[1])] += 1
        day = int(new[2] // DAY)
        self.last_day[day] = self.last_day.get(day, 0) + 1

    def add(self, other: Population) -> None:
        """Count ``other``'s profiles too (another partition's users).

        >>> a, b = Population(), Population()
        >>> a.move(None, (1, 10.0, 0.0)); b.move(None, (20, 900.0, 0.0))
        >>> a.add(b)
        >>> a.scores((20, 900.0, 0.0)), sum(a.frequency)
        ((3, 4, 4), 2)
        """
        self.frequency = [x + y for x, y in zip(self.frequency, other.frequency, strict=True)]
        self.monetary = [x + y for x, y in zip(self.monetary, other.monetary, strict=True)]
        for day, n in other.last_day.items():
            self.last_day[day] = self.last_day.get(day, 0) + n

    def scores(self, s: Standing) -> tuple[int, int, int]:
        """Quintile scores 1-5 for recency (5: most recent), frequency and monetary value."""
        day = int(s[2] // DAY)
        total = sum(self.frequency)
        if total == 0:
            return (3, 3, 3)
        below_day = sum(n for d, n in self.last_day.items() if d < day)
        at_day = self.last_day.get(day, 0)
        return (
            _quintile(below_day, at_day, total),
            _quintile(*_split(self.frequency, _log_bin(s[0])), total),
            _quintile(*_split(self.monetary, _log_bin(s[1])), total),
        )


def _split(hist: list[int], b: int) -> tuple[int, int]:
    return sum(hist[:b]), hist[b]


def _quintile(below: int, same: int, total: int) -> int:
    """1-5 from the mid-rank of a value among ``total`` (ties share the middle)."""
    rank = (below + 0.5 * same) / total
    return min(5, 1 + int(rank * 5))

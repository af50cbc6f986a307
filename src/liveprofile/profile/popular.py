"""The most popular items per category, from the item statistics in a store.

Item popularity is a forward-decayed count stored relative to each item's own landmark
(``anchor``, see :mod:`liveprofile.profile.decay`), so two items are compared at a common time:
``log2(popularity) + anchor / half_life`` is the log of the decayed count at time 0, which orders
items exactly as their decayed counts at any shared time would.

>>> from liveprofile.profile.items import ItemStats
>>> day = 86400.0
>>> rows = [
...     ("old-hit", ItemStats(anchor=0.0, popularity=8.0, category="shoes")),
...     ("fresh", ItemStats(anchor=7 * day, popularity=2.0, category="shoes")),
...     ("hat", ItemStats(anchor=0.0, popularity=1.0, category="hats")),
...     ("unfiled", ItemStats(anchor=0.0, popularity=50.0)),
... ]
>>> index = PopularIndex.build(rows, half_life=7 * day, per_category=10)
>>> index.top("shoes")  # 8 events a half-life before 'fresh' weigh 4 at its time: still more
['old-hit', 'fresh']
>>> index.top("socks"), index.overall[:2]
([], ['unfiled', 'old-hit'])
>>> index.for_interests(["hats", "sale", "shoes"], per_category=1)
['hat', 'old-hit']
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from liveprofile.profile.items import ItemStats


def popularity_key(stats: ItemStats, half_life: float) -> float:
    """The log2 of the item's decayed popularity at time 0: comparable across items."""
    if stats.popularity <= 0:
        return -math.inf
    return math.log2(stats.popularity) + stats.anchor / half_life


@dataclass(frozen=True)
class PopularIndex:
    """Item ids by category, most popular first, at most ``per_category`` each, and the same
    over all items (``overall``) for users whose interests name no known category."""

    per_category: int
    by_category: dict[str, list[str]] = field(default_factory=dict)
    overall: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls, rows: Iterable[tuple[str, ItemStats]], half_life: float, per_category: int = 200
    ) -> PopularIndex:
        """One pass over ``(item id, stats)``; memory is ``per_category`` ids per category."""
        heaps: dict[str, list[tuple[float, str]]] = {}
        overall: list[tuple[float, str]] = []
        for item, stats in rows:
            entry = (popularity_key(stats, half_life), item)
            _push(overall, entry, per_category)
            if stats.category is not None:
                _push(heaps.setdefault(stats.category, []), entry, per_category)
        return cls(
            per_category,
            {c: _ranked(h) for c, h in heaps.items()},
            _ranked(overall),
        )

    def top(self, category: str, n: int | None = None) -> list[str]:
        """The most popular items of one category (empty for an unknown one)."""
        return self.by_category.get(category, [])[:n]

    def for_interests(self, interests: Sequence[str], per_category: int) -> list[str]:
        """The popular items of each interest that is a known category, in interest order,
        without repeats; interests that are not categories (free tags) are skipped."""
        out: dict[str, None] = {}
        for interest in interests:
            for item in self.top(interest, per_category):
                out.setdefault(item)
        return list(out)


def _push(heap: list[tuple[float, str]], entry: tuple[float, str], size: int) -> None:
    if len(heap) < size:
        heapq.heappush(heap, entry)
    elif entry > heap[0]:
        heapq.heapreplace(heap, entry)


def _ranked(heap: list[tuple[float, str]]) -> list[str]:
    """Most popular first; equal popularity in item id order."""
    return [item for _, item in sorted(heap, key=lambda e: (-e[0], e[1]))]

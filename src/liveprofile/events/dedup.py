"""De-duplication by ``event_id`` over the most recent N events.

The window counts events in processing order, not wall-clock time, so a replay remembers exactly
what the live run remembered. Retries and re-sent batches arrive close to the original, which is
what the window is for; restarts after a crash are covered by the committed source offset.

>>> window = DedupWindow(size=2)
>>> [window.add(e) for e in ["a", "b", "a", "c", "a"]]
[True, True, False, True, True]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class DedupWindow:
    """Remembers the last ``size`` event ids."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._new: list[str] = []

    def __len__(self) -> int:
        return len(self._order)

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; False when it was already seen within the window."""
        if event_id in self._seen:
            return False
        if self.size == 0:
            return True
        self._seen.add(event_id)
        self._order.append(event_id)
        self._new.append(event_id)
        if len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
        return True

    def add_many(self, event_ids: list[str]) -> list[bool]:
        """:meth:`add` for each id in order; in bulk when no id repeats or was seen before."""
        seen = self._seen
        if (
            0 < len(event_ids) <= self.size
            and seen.isdisjoint(event_ids)
            and len(set(event_ids)) == len(event_ids)
        ):
            seen.update(event_ids)
            self._order.extend(event_ids)
            self._new.extend(event_ids)
            order = self._order
            for _ in range(len(order) - self.size):
                seen.discard(order.popleft())
            return [True] * len(event_ids)
        return [self.add(event_id) for event_id in event_ids]

    def take_new(self) -> list[str]:
        """The ids added since the last call (what the next commit must persist)."""
        new, self._new = self._new, []
        return new

    def restore(self, ids: Iterable[str]) -> None:
        """Reload remembered ids, oldest first."""
        for event_id in ids:
            self.add(event_id)
        self._new = []

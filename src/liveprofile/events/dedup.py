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
from itertools import islice


class DedupWindow:
    """Remembers the last ``size`` event ids."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._new: list[str] = []
        self._changes = 0  # how many times the remembered ids changed
        #: the last ids :meth:`fresh` found fresh, and when (a batch is asked twice: by the
        #: screen, then by the step)
        self._fresh: tuple[int, list[str]] | None = None

    def __len__(self) -> int:
        return len(self._order)

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; False when it was already seen within the window."""
        if event_id in self._seen:
            return False
        if self.size == 0:
            return True
        self._changes += 1
        self._seen.add(event_id)
        self._order.append(event_id)
        self._new.append(event_id)
        if len(self._order) > self.size:
            self._seen.discard(self._order.popleft())
        return True

    def add_many(self, event_ids: list[str]) -> list[bool]:
        """:meth:`add` for each id in order; in bulk when no id repeats or was seen before."""
        seen = self._seen
        if 0 < len(event_ids) <= self.size and self.fresh(event_ids):
            self._changes += 1
            seen.update(event_ids)
            self._order.extend(event_ids)
            self._new.extend(event_ids)
            order = self._order
            for _ in range(len(order) - self.size):
                seen.discard(order.popleft())
            return [True] * len(event_ids)
        return [self.add(event_id) for event_id in event_ids]

    def fresh(self, event_ids: list[str]) -> bool:
        """Whether none of ``event_ids`` repeats one before it or one remembered, so that
        :meth:`add` would take them all.

        >>> window = DedupWindow(size=3)
        >>> _ = window.add("a")
        >>> window.fresh(["b", "c"]), window.fresh(["b", "b"]), window.fresh(["a"])
        (True, False, False)
        >>> window.fresh(["d"]), window.add("d"), window.fresh(["d"])  # asked again after a change
        (True, True, False)
        """
        known = self._fresh
        if known is not None and known[0] == self._changes and known[1] == event_ids:
            return True
        if self._seen.isdisjoint(event_ids) and len(set(event_ids)) == len(event_ids):
            self._fresh = (self._changes, list(event_ids))
            return True
        return False

    def within(self, event_id: str, newest: int) -> bool:
        """Whether ``event_id`` is among the ``newest`` ids remembered (without remembering
        it); a pass over the window only when it is full and holds the id.

        >>> window = DedupWindow(size=3)
        >>> [window.add(e) for e in "abc"] and (window.within("a", 3), window.within("a", 2))
        (True, False)
        """
        if newest <= 0 or event_id not in self._seen:
            return False
        order = self._order
        return len(order) <= newest or event_id in islice(reversed(order), newest)

    def take_new(self) -> list[str]:
        """The ids added since the last call (what the next commit must persist)."""
        new, self._new = self._new, []
        return new

    def restore(self, ids: Iterable[str]) -> None:
        """Reload remembered ids, oldest first."""
        for event_id in ids:
            self.add(event_id)
        self._new = []


class Repeats:
    """The events of a batch the step will count as duplicates, judged before it runs (the
    screen judges a re-sent event as one, not by its content): an id still in ``window`` when
    the step reaches it, as the events passed before it in the batch (:meth:`passed`) leave
    the window.

    >>> window = DedupWindow(size=2)
    >>> _ = window.add("a")
    >>> repeats = Repeats(window)
    >>> repeats.repeated("a"), repeats.repeated("b")
    (True, False)
    >>> repeats.passed("b"); repeats.passed("c")  # "a" leaves the window
    >>> repeats.repeated("a"), repeats.repeated("b"), Repeats(DedupWindow(size=0)).repeated("a")
    (False, True, False)
    """

    def __init__(self, window: DedupWindow) -> None:
        self.window = window
        #: the ids passed in the batch, with how many new ids had passed before each
        self.added: dict[str, int] = {}
        self.n = 0  # new ids passed in the batch

    def repeated(self, event_id: str) -> bool:
        size, n = self.window.size, self.n
        at = self.added.get(event_id)
        if at is not None:
            return n - at - 1 < size
        return self.window.within(event_id, size - n)

    def passed(self, event_id: str) -> None:
        """Note an event that passed and is not a duplicate (the step remembers its id)."""
        self.added[event_id] = self.n
        self.n += 1

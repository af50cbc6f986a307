"""A batch of events as columns, for sources that can lay them out that way.

:class:`EventColumns` is a sequence of :class:`~liveprofile.events.schema.Event` like a list, so
everything that takes a batch of events takes it, but the compiled path reads its columns
directly and no ``Event`` object is made unless something iterates over the batch (one event
asked for by its index is made alone). The events have no properties and are no commands such
as ``$forget``; they may name an anonymous id (``anon``, None when none does): a batch with
none is *plain* (:attr:`EventColumns.plain`), and the step has nothing to look for in it but
the events' fields.

>>> import numpy as np
>>> cols = EventColumns(
...     event_id=["e1", "e2"],
...     user=["u1", "u2"],
...     type=["purchase", "view"],
...     ts=np.array([10.0, 20.0]),
...     item_id=["i1", None],
...     category=["dairy", None],
...     tags=[("food",), ()],
...     value=np.array([2.5, np.nan]),
... )
>>> len(cols), cols.topics()
(2, (['dairy', 'food'], [0, 2, 2]))
>>> cols[0].item_id, cols[0].tags, cols[0].value
('i1', ('food',), 2.5)
>>> cols[1].value is None
True
>>> EventColumns.of(list(cols)).user, cols.plain
(['u1', 'u2'], True)
>>> visits = EventColumns.of([Event("e3", "v1", "view", 30.0, anonymous_id="v1")])
>>> visits.plain, visits.anon, visits[0].anonymous_id
(False, ['v1'], 'v1')
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain, compress, repeat
from operator import add, is_, is_not, sub
from typing import cast, overload

import numpy as np
import numpy.typing as npt

from liveprofile.events.schema import Event

F64 = npt.NDArray[np.float64]


@dataclass(eq=False)
class EventColumns(Sequence[Event]):
    """Events as columns; ``value`` is NaN where an event has none, ``anon`` each event's
    anonymous id (None: no event of the batch has one)."""

    event_id: list[str]
    user: list[str]
    type: list[str]
    ts: F64
    item_id: Sequence[str | None]
    category: Sequence[str | None]
    tags: list[tuple[str, ...]]
    value: F64
    anon: list[str | None] | None = None
    _events: list[Event] | None = field(default=None, repr=False)

    @property
    def plain(self) -> bool:
        """Whether no event names an anonymous id."""
        return self.anon is None

    @classmethod
    def of(cls, events: Sequence[Event]) -> EventColumns:
        """The columns of ``events`` (as objects too: properties and commands stay on them)."""
        if isinstance(events, EventColumns):
            return events
        n = len(events)
        anons = [e.anonymous_id for e in events]
        anon = None if anons.count(None) == n else anons
        return cls(
            [e.event_id for e in events],
            [e.user for e in events],
            [e.type for e in events],
            np.fromiter((e.ts for e in events), np.float64, n),
            [e.item_id for e in events],
            [e.category for e in events],
            [e.tags for e in events],
            np.array([e.value for e in events], np.float64).reshape(n),
            anon,
            list(events),
        )

    def __len__(self) -> int:
        return len(self.event_id)

    @overload
    def __getitem__(self, i: int) -> Event: ...

    @overload
    def __getitem__(self, i: slice) -> list[Event]: ...

    def __getitem__(self, i: int | slice) -> Event | list[Event]:
        if self._events is not None or not isinstance(i, int):
            return self.events()[i]
        value = float(self.value[i])
        return Event(
            self.event_id[i],
            self.user[i],
            self.type[i],
            float(self.ts[i]),
            self.item_id[i],
            self.category[i],
            self.tags[i],
            None if math.isnan(value) else value,
            None if self.anon is None else self.anon[i],
        )

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())

    def events(self) -> list[Event]:
        """The events as objects (made once, on first use)."""
        if self._events is None:
            anon = repeat(None, len(self)) if self.anon is None else self.anon
            self._events = [
                Event(e, u, k, t, i, c, g, None if math.isnan(v) else v, a)
                for e, u, k, t, i, c, g, v, a in zip(
                    self.event_id,
                    self.user,
                    self.type,
                    self.ts.tolist(),
                    self.item_id,
                    self.category,
                    self.tags,
                    self.value.tolist(),
                    anon,
                    strict=True,
                )
            ]
        return self._events

    def topics(self) -> tuple[list[str], list[int]]:
        """Every event's topics (its category, then its tags) in one list, and where each
        event's start (one more entry than events).

        >>> EventColumns.of([Event("e1", "u", "view", 1.0, category="c"),
        ...                  Event("e2", "u", "view", 2.0)]).topics()
        (['c'], [0, 1, 1])
        >>> EventColumns.of([Event("e1", "u", "view", 1.0, tags=("a", "b")),
        ...                  Event("e2", "u", "view", 2.0, category="c", tags=("a",))]).topics()
        (['a', 'b', 'c', 'a'], [0, 2, 4])
        """
        if not any(self.tags):  # no tags (the common batch): the categories, a few C calls
            has = list(map(is_not, self.category, repeat(None)))
            cats = list(compress(cast(Sequence[str], self.category), has))
            return cats, list(accumulate(has, initial=0))
        # each event's (category, *tags), joined in C; a missing category is left out
        each = list(map(add, zip(self.category), self.tags))
        flat = list(chain.from_iterable(each))
        if None not in self.category:
            return flat, list(accumulate(map(len, each), initial=0))
        missing = map(is_, self.category, repeat(None))
        flat = list(compress(flat, map(is_not, flat, repeat(None))))
        return flat, list(accumulate(map(sub, map(len, each), missing), initial=0))

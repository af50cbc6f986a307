"""Anonymous visitors in a batch of the compiled step: events put under the user their id is
linked to (:func:`as_users`), and which users stop being visitors (:func:`known_events`), as
the Python step decides it event by event.

>>> from liveprofile.events.schema import Event
>>> events = [Event("e1", "v1", "view", 1.0, anonymous_id="v1"), Event("e2", "u2", "view", 2.0)]
>>> [e.user for e in as_users(events, {"v1": "u1"})]
['u1', 'u2']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from itertools import compress, count, repeat
from operator import attrgetter, is_not
from typing import Any, cast

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import COMMANDS, Event


@dataclasses.dataclass
class BatchIds:
    """A batch's events as columns, read once per batch and shared by the screen, the keys
    the batch loads and the step: each event's anonymous id (None: none), its fields as sent
    (``cols``: the user before the identity links move it) and whether it is a command
    (``$merge``, ``$forget``).

    >>> from liveprofile.events.schema import Event
    >>> ids = BatchIds.of([Event("e1", "v1", "view", 1.0, anonymous_id="v1"),
    ...                    Event("e2", "u1", "buy", 2.0, anonymous_id="v1")])
    >>> ids.anon, ids.user, ids.visitors()
    (['v1', 'v1'], ['v1', 'u1'], ['v1'])
    >>> ids.stop_marks(np.ones(2, np.bool_)).tolist()  # the login
    [False, True]
    """

    anon: list[str | None]
    cols: EventColumns
    command: npt.NDArray[np.bool_]
    #: the events (not commands) :func:`as_users` put under the user their id is linked to
    moved: list[int] = dataclasses.field(default_factory=list)
    _linking: npt.NDArray[np.bool_] | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def of(cls, events: Sequence[Event]) -> BatchIds:
        """The columns of ``events`` (no event made when they are columns already)."""
        cols = EventColumns.of(events)
        n = len(cols)
        anon: list[str | None] = [None] * n if cols.anon is None else cols.anon
        if COMMANDS.isdisjoint(cols.type):  # the common batch, checked at once
            return cls(anon, cols, np.zeros(n, np.bool_))
        command = np.fromiter(map(COMMANDS.__contains__, cols.type), np.bool_, n)
        return cls(anon, cols, command)

    @property
    def user(self) -> list[str]:
        """Each event's user id as sent."""
        return self.cols.user

    def linking(self) -> npt.NDArray[np.bool_]:
        """Which events name an anonymous id other than their user id (read once: the
        screen and the step ask)."""
        if self._linking is None:
            n, anons = len(self.anon), self.anon
            marks = np.zeros(n, np.bool_)
            # the events with an anonymous id (a shop's visitors' and logins), then of them
            # those naming another user id
            named = list(compress(count(), map(is_not, anons, repeat(None))))
            if named:
                user = self.user
                marks[[k for k in named if anons[k] != user[k]]] = True
            self._linking = marks
        return self._linking.copy()

    def visitors(self) -> list[str]:
        """The anonymous ids named, in order of first appearance."""
        anons = dict.fromkeys(self.anon)
        anons.pop(None, None)
        return list(anons)  # type: ignore[arg-type]

    def stop_marks(self, ok: Any) -> Any:
        """Which applied events need the Python lifecycle: logins (an anonymous id linked to
        another id), ``$merge`` and ``$forget``; None when there are none."""
        marks = self.linking()
        marks |= self.command
        if not marks.any():
            return None
        return marks & ok


def known_events(
    visitors: dict[str, bool],
    events: Sequence[Event],
    cols: EventColumns,
    applied: list[int],
    aliases: dict[str, str],
) -> None:
    """Mark in ``visitors`` (True: a new profile, or one made by anonymous events only) the users
    who stop being anonymous visitors in this batch, as the Python step decides it event by
    event: at the first applied event that names a known user."""
    if isinstance(events, EventColumns) and events.plain:  # every user is known
        visitors.update(dict.fromkeys(visitors, False))
        return
    if isinstance(events, EventColumns):  # the ids as sent, without making events
        anons, sent = cast(list[str | None], events.anon), events.user
        for k in applied:
            user = cols.user[k]
            if visitors.get(user) and not _anonymous(anons[k], sent[k], aliases):
                visitors[user] = False
        return
    for k in applied:
        user = cols.user[k]
        if visitors.get(user) and not anonymous_only(events[k], aliases):
            visitors[user] = False


def anonymous_only(e: Event, aliases: dict[str, str]) -> bool:
    """Whether ``e`` is an anonymous visitor's own (its id not linked to a user)."""
    return _anonymous(e.anonymous_id, e.user, aliases)


def _anonymous(anon: str | None, user: str, aliases: dict[str, str]) -> bool:
    return anon is not None and anon == user and anon not in aliases


def as_users(
    events: Sequence[Event], aliases: dict[str, str], ids: BatchIds | None = None
) -> Sequence[Event]:
    """``events`` under the user their id is linked to: linked visitors' (anonymous id only)
    and those of users merged into another (``$merge``). ``ids``: the events' ids, which
    learn which events moved."""
    if ids is not None:  # the columns read already, with the moved users
        return _moved(ids, aliases) if aliases else ids.cols
    if not aliases:
        return events
    if isinstance(events, EventColumns):  # no commands: every event named moves
        if not any(u in aliases for u in events.user):
            return events
        user = [aliases.get(u, u) for u in events.user]
        made = events._events
        if made is not None:
            made = [msgspec.structs.replace(e, user=u) for e, u in zip(made, user, strict=True)]
        return dataclasses.replace(events, user=user, _events=made)
    moved = list(compress(count(), map(aliases.__contains__, map(_USER, events))))
    if not moved:
        return events
    out = list(events)
    for k in moved:
        e = out[k]
        if e.type not in COMMANDS:
            out[k] = msgspec.structs.replace(e, user=aliases[e.user])
    return out


def _moved(ids: BatchIds, aliases: dict[str, str]) -> EventColumns:
    """:func:`as_users` of the events ``ids`` holds the columns of, noting which moved."""
    cols = ids.cols
    moved = list(compress(count(), map(aliases.__contains__, cols.user)))
    if not moved:
        return cols
    # the events as objects only when made already (then they may hold properties)
    made = cols._events
    out, user, command = None if made is None else list(made), list(cols.user), ids.command
    for k in moved:
        if not command[k]:
            user[k] = to = aliases[user[k]]
            if out is not None:
                out[k] = msgspec.structs.replace(out[k], user=to)
            ids.moved.append(k)
    return dataclasses.replace(cols, user=user, _events=out)


_USER = attrgetter("user")

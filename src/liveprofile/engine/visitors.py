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
from operator import attrgetter

import msgspec

from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import COMMANDS, Event


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
    if isinstance(events, EventColumns):  # plain events: every user is known
        visitors.update(dict.fromkeys(visitors, False))
        return
    for k in applied:
        user = cols.user[k]
        if visitors.get(user) and not anonymous_only(events[k], aliases):
            visitors[user] = False


def anonymous_only(e: Event, aliases: dict[str, str]) -> bool:
    anon = e.anonymous_id
    return anon is not None and anon == e.user and anon not in aliases


def as_users(events: Sequence[Event], aliases: dict[str, str]) -> Sequence[Event]:
    """``events`` under the user their id is linked to: linked visitors' (anonymous id only)
    and those of users merged into another (``$merge``)."""
    if not aliases:
        return events
    if isinstance(events, EventColumns):
        if not any(u in aliases for u in events.user):
            return events
        return dataclasses.replace(events, user=[aliases.get(u, u) for u in events.user])
    moved = [k for k, u in enumerate(map(_USER, events)) if u in aliases]
    if not moved:
        return events
    out = list(events)
    for k in moved:
        e = out[k]
        if e.type not in COMMANDS:
            out[k] = msgspec.structs.replace(e, user=aliases[e.user])
    return out


_USER = attrgetter("user")

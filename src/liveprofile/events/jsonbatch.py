"""A batch of JSON records read straight into columns, when every record is a simple event.

:meth:`EventParser.parse_json <liveprofile.events.schema.EventParser.parse_json>` reads one record
at a time into an :class:`~liveprofile.events.schema.Event`, and a runner that wants columns
then lays the events out again (:meth:`EventColumns.of`). For the common batch, where every
record is a *simple* event (string ids, a ``user_id`` or an ``anonymous_id`` or both, no
``props``, no command) written without escapes, :func:`json_columns` decodes each record into
a small struct with no Python code between records and builds the columns once, checking the
batch's bytes and arrays at once instead of each event on its own. A shop's logins (an event
naming both ids) and its visitors' events (an anonymous id alone) are simple events too.

It accepts exactly what ``parse_json`` accepts and gives the same values: any record it is
not sure of (one ``parse_json`` would refuse, or accept as something other than a simple
event, or read with the slower decoder that checks the ids' pattern) makes it return None, and
the caller parses the batch record by record as before, with the same dead letters.

>>> cols = json_columns(
...     [b'{"event_id": "e1", "user_id": "u1", "type": "View", "ts": 5}',
...      b'{"event_id": "e2", "user_id": "u2", "type": "buy", "ts": 6.5, "value": 3,'
...      b' "tags": ["a"]}'],
... )
>>> cols.type, cols.ts.tolist(), cols.value.tolist()[1], cols.tags, cols.plain
(['view', 'buy'], [5.0, 6.5], 3.0, [(), ('a',)], True)
>>> visits = json_columns([b'{"event_id": "e1", "anonymous_id": "a", "type": "view", "ts": 5}',
...                        b'{"event_id": "e2", "anonymous_id": "a", "user_id": "u1",'
...                        b' "type": "buy", "ts": 6}'])
>>> visits.user, visits.anon
(['a', 'u1'], ['a', 'a'])
>>> json_columns([b'{"event_id": "e1", "user_id": "u1", "type": "view", "ts": 5,'
...               b' "props": {"k": 1}}']) is None
True
"""

from __future__ import annotations

from typing import Annotated, cast

import msgspec
import numpy as np

from liveprofile.errors import InvalidEvent
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import (
    _KINDS,
    COMMANDS,
    MAX_DEPTH,
    MAX_LINE,
    MAX_TAGS,
    MAX_TS,
    MIN_TS,
    _FreeId,
    _kind,
    _Tag,
)

__all__ = ["json_columns"]


class _Simple(msgspec.Struct, gc=False):
    """A simple event as written: the fields of ``schema._PlainRawEvent`` a simple event may
    have, each of the one type ``parse_json`` turns it into (``props`` only as null)."""

    event_id: _FreeId
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    ts: float
    user_id: _FreeId | None = None
    item_id: _FreeId | None = None
    category: _Tag | None = None
    tags: Annotated[tuple[_Tag, ...], msgspec.Meta(max_length=MAX_TAGS)] | None = None
    value: float | None = None
    anonymous_id: _FreeId | None = None
    props: None = None


_decode = msgspec.json.Decoder(_Simple).decode
#: brackets a simple event needs: its object, and its tags' array when it has one
_OWN_BRACKETS = 2


def json_columns(values: list[bytes]) -> EventColumns | None:
    """The events of the JSON records ``values`` as columns, each as
    :meth:`EventParser.parse_json` reads it, when all of them are simple events it accepts;
    None otherwise (or when no record is given). A command is never simple, so what a parser
    accepting commands reads is the same."""
    if not values:
        return None
    joined = b"\n".join(values)
    if b"\\" in joined or b"\x7f" in joined or max(map(len, values)) > MAX_LINE:
        return None  # escapes or DEL: ids are checked against their pattern, one by one
    if not joined.isascii():
        try:
            joined.decode("utf-8")  # ASCII separators: all valid exactly when each one is
        except UnicodeDecodeError:
            return None
    try:
        recs = list(map(_decode, values))
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None  # deep nesting raises RecursionError, caught before it can exhaust
    n = len(recs)
    tags = [r.tags for r in recs]
    with_tags = n - tags.count(None)
    # nesting: each record holds its object's brace and a bracket per tags array; when the
    # batch has at most MAX_DEPTH - 2 more, no record can hold more than MAX_DEPTH in all
    if joined.count(b"{") + joined.count(b"[") - n - with_tags > MAX_DEPTH - _OWN_BRACKETS:
        return None
    ts = np.fromiter([r.ts for r in recs], np.float64, n)
    if not ((ts >= MIN_TS) & (ts <= MAX_TS)).all():
        return None
    value = np.array([r.value for r in recs], np.float64).reshape(n)
    if np.isinf(value).any():
        return None  # not finite: refused
    types = [r.type for r in recs]
    kinds = {}
    for given in set(types):
        kind = _KINDS.get(given)
        if kind is None:
            try:
                kind = _kind(given)
            except InvalidEvent:
                return None
        if kind in COMMANDS:
            return None
        kinds[given] = kind
    if any(given != kind for given, kind in kinds.items()):
        types = [kinds[t] for t in types]
    users = [r.user_id for r in recs]
    anons = [r.anonymous_id for r in recs]
    if None in users:  # a visitor's event: its profile is under its anonymous id
        users = [a if u is None else u for u, a in zip(users, anons, strict=True)]
        if None in users:
            return None  # neither id: refused
    return EventColumns(
        [r.event_id for r in recs],
        cast(list[str], users),
        types,
        ts,
        [r.item_id for r in recs],
        [r.category for r in recs],
        [() if g is None else g for g in tags],
        value,
        None if anons.count(None) == n else anons,
    )

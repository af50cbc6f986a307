"""A batch of JSON records read straight into columns, when every record is a plain event.

:meth:`EventParser.parse_json <liveprofile.events.schema.EventParser.parse_json>` reads one record
at a time into an :class:`~liveprofile.events.schema.Event`, and a runner that wants columns
then lays the events out again (:meth:`EventColumns.of`). For the common batch, where every
record is a *plain* event (string ids, a ``user_id``, no ``anonymous_id``, no ``props``, no
command) written without escapes, :func:`plain_columns` decodes each record into a small
struct with no Python code between records and builds the columns once, checking the batch's
bytes and arrays at once instead of each event on its own.

It accepts exactly what ``parse_json`` accepts and gives the same values: any record it is
not sure of (one ``parse_json`` would refuse, or accept as something other than a plain event,
or read with the slower decoder that checks the ids' pattern) makes it return None, and the
caller parses the batch record by record as before, with the same dead letters.

>>> cols = plain_columns(
...     [b'{"event_id": "e1", "user_id": "u1", "type": "View", "ts": 5}',
...      b'{"event_id": "e2", "user_id": "u2", "type": "buy", "ts": 6.5, "value": 3,'
...      b' "tags": ["a"]}'],
... )
>>> cols.type, cols.ts.tolist(), cols.value.tolist()[1], cols.tags
(['view', 'buy'], [5.0, 6.5], 3.0, [(), ('a',)])
>>> plain_columns([b'{"event_id": "e1", "anonymous_id": "a", "type": "view", "ts": 5}']) is None
True
"""

from __future__ import annotations

from typing import Annotated

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

__all__ = ["plain_columns"]


class _Plain(msgspec.Struct, gc=False):
    """A plain event as written: the fields of ``schema._PlainRawEvent`` a plain event may
    have, each of the one type ``parse_json`` turns it into (``anonymous_id`` and ``props``
    only as null)."""

    event_id: _FreeId
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    ts: float
    user_id: _FreeId
    item_id: _FreeId | None = None
    category: _Tag | None = None
    tags: Annotated[tuple[_Tag, ...], msgspec.Meta(max_length=MAX_TAGS)] | None = None
    value: float | None = None
    anonymous_id: None = None
    props: None = None


_decode = msgspec.json.Decoder(_Plain).decode
#: brackets a plain event needs: its object, and its tags' array when it has one
_OWN_BRACKETS = 2


def plain_columns(values: list[bytes]) -> EventColumns | None:
    """The events of the JSON records ``values`` as columns, each as
    :meth:`EventParser.parse_json` reads it, when all of them are plain events it accepts;
    None otherwise (or when no record is given). A command is never plain, so what a parser
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
    return EventColumns(
        [r.event_id for r in recs],
        [r.user_id for r in recs],
        types,
        ts,
        [r.item_id for r in recs],
        [r.category for r in recs],
        [() if g is None else g for g in tags],
        value,
    )

"""The event schema and its validation.

An event is a JSON object: ``event_id``, ``user_id`` (or ``anonymous_id``), ``type``, ``ts``
(epoch seconds or ISO 8601), optional ``item_id``, ``category``, ``tags``, ``value`` and ``props``.
:class:`EventParser` turns raw JSON into a normalised :class:`Event` or raises
:class:`~liveprofile.errors.InvalidEvent` with a reason a person can act on.

>>> parser = EventParser()
>>> raw = b'{"event_id": "e1", "user_id": 7, "type": "View", "ts": "2017-01-01T00:00:00Z"}'
>>> e = parser.parse_json(raw)
>>> e.user, e.type, e.ts
('7', 'view', 1483228800.0)
>>> parser.parse_json(b'{"event_id": "e2", "type": "view", "ts": 1}')
Traceback (most recent call last):
...
liveprofile.errors.InvalidEvent: event has neither 'user_id' nor 'anonymous_id'
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from liveprofile.errors import InvalidEvent

MAX_ID = 128
MAX_TAGS = 32
MAX_TAG = 64
MAX_PROPS = 32
MAX_LINE = 64 * 1024
#: deepest nesting of arrays and objects read (an event needs 2: props and tags)
MAX_DEPTH = 16
BOM = b"\xef\xbb\xbf"
# Event times before 1970 or after 2100 are almost always unit mistakes (milliseconds, days).
MIN_TS = 0.0
MAX_TS = 4102444800.0

# ids are printable: no control characters (NUL, newlines) that break logs, exports and keys
_PRINTABLE = r"^[^\x00-\x1f\x7f]+\Z"
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID, pattern=_PRINTABLE)]
_Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG)]
_TYPE = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
PropValue = str | int | float | bool | None
#: the command type that erases a user (privacy): profile, memberships, identity links, changes
FORGET = "$forget"
#: the command type that merges ``anonymous_id``'s profile into ``user_id``'s even when the
#: former is a known user (an operator's decision; an ordinary event never does that)
MERGE = "$merge"
#: command types: accepted only from an operator (see :class:`EventParser`)
COMMANDS = frozenset({FORGET, MERGE})


class Event(msgspec.Struct, frozen=True, gc=False):
    """A validated, normalised event.

    ``user`` is the key the profile lives under: the ``user_id`` when known, else the
    ``anonymous_id``. ``ts`` is event time in epoch seconds (float, UTC).
    """

    event_id: str
    user: str
    type: str
    ts: float
    item_id: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    value: float | None = None
    anonymous_id: str | None = None
    props: dict[str, PropValue] | None = None

    def topics(self) -> tuple[str, ...]:
        """The interest keys this event touches: its category followed by its tags."""
        if self.category is None:
            return self.tags
        return (self.category, *self.tags)


class _RawEvent(msgspec.Struct):
    event_id: _Id | int
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    ts: float | int | str
    user_id: _Id | int | None = None
    anonymous_id: _Id | int | None = None
    item_id: _Id | int | None = None
    category: _Tag | None = None
    tags: Annotated[list[_Tag], msgspec.Meta(max_length=MAX_TAGS)] | None = None
    value: float | int | None = None
    props: Annotated[dict[str, PropValue], msgspec.Meta(max_length=MAX_PROPS)] | None = None


# The same fields without the ids' pattern (msgspec checks a pattern with Python's ``re``: about
# half of a small event's decoding). JSON strings hold no raw control characters, so a text
# without a backslash (no escapes) and without DEL decodes to ids that pass the pattern anyway:
# :meth:`EventParser.parse_json` reads such texts with this one, the others with _RawEvent.
_FreeId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID)]


class _PlainRawEvent(msgspec.Struct):
    event_id: _FreeId | int
    type: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    ts: float | int | str
    user_id: _FreeId | int | None = None
    anonymous_id: _FreeId | int | None = None
    item_id: _FreeId | int | None = None
    category: _Tag | None = None
    tags: Annotated[list[_Tag], msgspec.Meta(max_length=MAX_TAGS)] | None = None
    value: float | int | None = None
    props: Annotated[dict[str, PropValue], msgspec.Meta(max_length=MAX_PROPS)] | None = None


def parse_timestamp(value: float | int | str) -> float:
    """Epoch seconds from epoch seconds or an ISO 8601 string (naive times are UTC).

    >>> parse_timestamp("2018-09-24T14:00:00+02:00")
    1537790400.0
    >>> parse_timestamp(964982703)
    964982703.0
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            try:
                ts = float(text)
            except ValueError:
                raise InvalidEvent(
                    f"'ts' {value!r} is neither epoch seconds nor an ISO 8601 time"
                ) from None
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            ts = moment.timestamp()
    else:
        try:
            ts = float(value)
        except OverflowError:
            raise InvalidEvent(f"'ts' {str(value)[:40]}... is far outside 1970..2100") from None
    if not math.isfinite(ts) or not MIN_TS <= ts <= MAX_TS:
        raise InvalidEvent(
            f"'ts' {value!r} is outside 1970..2100 in epoch seconds (milliseconds given?)"
        )
    return ts


class EventParser:
    """Decode and validate events from JSON bytes or from already-decoded fields.

    Command events (``$forget``, ``$merge``) are refused unless ``commands`` is true: only an
    operator issues them (``liveprofile privacy delete``, ``replay --allow-commands``).

    >>> EventParser().parse_json(b'{"event_id": "x", "user_id": "u", "type": "$forget", "ts": 1}')
    Traceback (most recent call last):
    ...
    liveprofile.errors.InvalidEvent: '$forget' is an operator command, not accepted ...
    """

    def __init__(self, *, commands: bool = False) -> None:
        self._decoder = msgspec.json.Decoder(_RawEvent)
        self._plain = msgspec.json.Decoder(_PlainRawEvent)
        self.commands = commands

    def parse_json(self, raw: bytes | str) -> Event:
        """Parse one JSON object; raise :class:`InvalidEvent` saying what is wrong."""
        if len(raw) > MAX_LINE:
            raise InvalidEvent(f"event is {len(raw)} bytes, more than the limit of {MAX_LINE}")
        if isinstance(raw, bytes):
            if raw[:3] == BOM:
                raw = raw[3:]
            if not raw.isascii():
                check_utf8(raw)
        check_depth(raw)
        plain = isinstance(raw, bytes) and b"\\" not in raw and b"\x7f" not in raw
        try:
            rec = (self._plain if plain else self._decoder).decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidEvent(str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InvalidEvent(f"not valid JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None
        event = self._normalise(rec)
        if event.type in COMMANDS and not self.commands:
            raise InvalidEvent(
                f"{event.type!r} is an operator command, not accepted from this source "
                "(use 'liveprofile privacy delete', or replay --allow-commands)"
            )
        return event

    def parse_fields(self, fields: dict[str, object]) -> Event:
        """Validate a mapping of fields (as read from CSV or a data frame)."""
        try:
            rec = msgspec.convert(fields, _RawEvent, strict=False)
        except msgspec.ValidationError as exc:
            raise InvalidEvent(str(exc)) from None
        return self._normalise(rec)

    @staticmethod
    def _normalise(rec: _RawEvent | _PlainRawEvent) -> Event:
        user = rec.user_id if rec.user_id is not None else rec.anonymous_id
        if user is None:
            raise InvalidEvent("event has neither 'user_id' nor 'anonymous_id'")
        kind = _KINDS.get(rec.type)
        if kind is None:
            kind = _kind(rec.type)
        value = rec.value
        if value is not None:
            try:
                value = float(value)
            except OverflowError:
                value = math.inf
            if not math.isfinite(value):
                raise InvalidEvent(f"'value' must be a finite number, got {rec.value!r}")
        ts = rec.ts
        if type(ts) is float and MIN_TS <= ts <= MAX_TS:  # the common case, checked
            pass
        else:
            ts = parse_timestamp(ts)
        event_id, item, anon = rec.event_id, rec.item_id, rec.anonymous_id
        return Event(
            event_id if type(event_id) is str else _id("event_id", event_id),
            user if type(user) is str else _id("user_id" if rec.user_id else "anonymous_id", user),
            kind,
            ts,
            item if item is None or type(item) is str else _id("item_id", item),
            rec.category,
            tuple(rec.tags) if rec.tags else (),
            value,
            anon if anon is None or type(anon) is str else _id("anonymous_id", anon),
            rec.props or None,
        )


#: event types seen valid, as given -> as stored (a bounded cache: types are few)
_KINDS: dict[str, str] = {}


def _kind(given: str) -> str:
    kind = given.lower()
    if kind not in COMMANDS and _TYPE.fullmatch(kind) is None:
        raise InvalidEvent(f"'type' {given!r} must be a word of letters, digits, '_', '.' or '-'")
    if len(_KINDS) < 1024:
        _KINDS[given] = kind
    return kind


def check_utf8(raw: bytes) -> None:
    """Refuse bytes that are not UTF-8 anywhere, also inside keys the schema ignores.

    >>> check_utf8('{"k": "caf\u00e9"}'.encode())
    >>> check_utf8(b'{"k": "\\xff"}')
    Traceback (most recent call last):
    ...
    liveprofile.errors.InvalidEvent: not valid UTF-8: invalid start byte at byte 7
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"not valid UTF-8: {exc.reason} at byte {exc.start}") from None


def check_depth(raw: bytes | str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` before any parser recurses into it.

    >>> check_depth(b'{"a": [[1]]}')
    >>> check_depth(b"[" * 40 + b"]" * 40)
    Traceback (most recent call last):
    ...
    liveprofile.errors.InvalidEvent: JSON nested deeper than 16 levels
    """
    data = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:  # the common case: a few brackets
        return
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                raise InvalidEvent(f"JSON nested deeper than {limit} levels")
        elif byte in (0x5D, 0x7D):
            depth -= 1


def _id(name: str, given: str | int) -> str:
    """An id given as a number, as a string."""
    text = str(given)
    if len(text) > MAX_ID:
        raise InvalidEvent(f"'{name}' is longer than {MAX_ID} characters")
    return text


class _Wire(msgspec.Struct, omit_defaults=True):
    event_id: str
    type: str
    ts: float
    user_id: str | None = None
    anonymous_id: str | None = None
    item_id: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    value: float | None = None
    props: dict[str, PropValue] | None = None


def forget_event(user: str, ts: float) -> Event:
    """A ``$forget`` command erasing ``user`` at event time ``ts``, with an id of its own.

    >>> e = forget_event("ann", 5.0)
    >>> (e.type, e.user, e.ts, e.event_id.startswith("$forget:"))
    ('$forget', 'ann', 5.0, True)
    """
    return Event(f"{FORGET}:{uuid.uuid4().hex}", user, FORGET, ts)


_wire_encoder = msgspec.json.Encoder()


def encode_event(e: Event) -> bytes:
    """An event as the JSON object a producer sends (the input format); parsing it gives ``e``.

    >>> e = Event("e1", "u1", "view", 10.0, item_id="i1", tags=("a",))
    >>> encode_event(e)
    b'{"event_id":"e1","type":"view","ts":10.0,"user_id":"u1","item_id":"i1","tags":["a"]}'
    >>> EventParser().parse_json(encode_event(e)) == e
    True
    """
    user_id = None if e.anonymous_id == e.user else e.user
    wire = _Wire(
        e.event_id, e.type, e.ts, user_id, e.anonymous_id, e.item_id, e.category, e.tags,
        e.value, e.props,
    )  # fmt: skip
    return _wire_encoder.encode(wire)

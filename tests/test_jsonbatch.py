"""A batch of records read at once into columns (``events.jsonbatch.json_columns``) is read
exactly as ``EventParser.parse_json`` reads each record: same values (the anonymous ids too),
and no record accepted that ``parse_json`` refuses or reads as something other than a simple
event (properties, a command)."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from liveprofile.errors import InvalidEvent
from liveprofile.events.columns import EventColumns
from liveprofile.events.jsonbatch import json_columns
from liveprofile.events.schema import COMMANDS, Event, EventParser

_ids = st.one_of(
    st.text(st.characters(codec="utf-8"), min_size=0, max_size=6),
    st.sampled_from(["u1", "u2", "é", "x" * 129]),
    st.integers(-5, 10**20),
)
_fields: dict[str, Any] = {
    "event_id": _ids,
    "user_id": st.one_of(_ids, st.none()),
    "anonymous_id": st.one_of(st.none(), st.just("a1")),
    "type": st.sampled_from(["view", "View", "buy", "$forget", "no way", "", "x" * 33]),
    "ts": st.one_of(
        st.floats(-1e10, 5e9, allow_nan=False),
        st.integers(-10, 5_000_000_000),
        st.sampled_from(["2020-01-01T00:00:00Z", "nope", 10**400]),
    ),
    "item_id": st.one_of(st.none(), _ids),
    "category": st.one_of(st.none(), st.sampled_from(["toys", "", "c" * 65])),
    "tags": st.one_of(st.none(), st.lists(st.sampled_from(["a", "b", ""]), max_size=34)),
    "value": st.one_of(
        st.none(), st.floats(allow_nan=False), st.integers(-(10**30), 10**30), st.just(10**400)
    ),
    "props": st.one_of(st.none(), st.just({}), st.just({"k": 1})),
    "extra": st.recursive(st.integers(), lambda inner: st.lists(inner, max_size=2), max_leaves=20),
}


@st.composite
def _record(draw: st.DrawFn) -> bytes:
    """A JSON record, mostly a plain event, with some fields left out or odd."""
    fields = {"event_id": "e", "user_id": "u1", "type": "view", "ts": 1.7e9}
    for name, strategy in _fields.items():
        if draw(st.integers(0, 5)) == 0:
            fields.pop(name, None)
            if draw(st.booleans()):
                fields[name] = draw(strategy)
    raw = msgspec.json.encode(fields) if "ts" not in fields or fields["ts"] != 10**400 else None
    if raw is None:
        raw = msgspec.json.encode({**fields, "ts": 0}).replace(b'"ts":0', b'"ts":1' + b"0" * 400)
    tweak = draw(st.integers(0, 12))
    if tweak == 0:
        raw = b"\xef\xbb\xbf" + raw  # a BOM parse_json skips
    elif tweak == 1:
        raw = raw[:-1]  # not JSON
    elif tweak == 2:
        raw = raw + b" " + raw  # two objects
    elif tweak == 3:
        raw = raw.replace(b'"e', b'"\\u0065', 1)  # an escape
    elif tweak == 4:
        raw = b""
    return raw


def _parsed(values: list[bytes]) -> list[Event] | None:
    parser = EventParser()
    try:
        return [parser.parse_json(v) for v in values]
    except InvalidEvent:
        return None


def _same(cols: EventColumns, events: list[Event]) -> None:
    assert len(cols) == len(events)
    for e, (eid, user, kind, ts, item, cat, tags, value) in zip(
        events,
        zip(
            cols.event_id,
            cols.user,
            cols.type,
            cols.ts.tolist(),
            cols.item_id,
            cols.category,
            cols.tags,
            cols.value.tolist(),
            strict=True,
        ),
        strict=True,
    ):
        assert (eid, user, kind, ts, item, cat, tags) == (
            e.event_id,
            e.user,
            e.type,
            e.ts,
            e.item_id,
            e.category,
            e.tags,
        )
        assert type(ts) is float and type(eid) is str and type(user) is str
        assert (math.isnan(value) and e.value is None) or value == e.value
        assert e.props is None and e.type not in COMMANDS
    anons = [e.anonymous_id for e in events]
    assert cols.anon == (None if anons.count(None) == len(anons) else anons)
    assert [cols[k] for k in range(len(cols))] == events  # one at a time, as the screen asks
    assert list(cols) == events


@settings(max_examples=400, deadline=None)
@given(st.lists(_record(), min_size=1, max_size=6))
def test_a_batch_reads_as_its_records_do_or_not_at_all(values: list[bytes]) -> None:
    cols = json_columns(values)
    events = _parsed(values)
    event(f"read at once: {cols is not None}")
    if cols is not None:
        assert events is not None  # nothing parse_json refuses
        _same(cols, events)


def test_plain_records_are_read_at_once() -> None:
    values = [
        b'{"event_id": "e1", "user_id": "u1", "type": "View", "ts": 1700000000}',
        b'{"event_id": "e2", "user_id": "u\xc3\xa9", "type": "buy", "ts": 1.7e9, "value": -2,'
        b' "item_id": "i1", "category": "toys", "tags": ["a", "b"], "anonymous_id": null}',
        b'{"event_id": "e3", "user_id": "u1", "type": "view", "ts": 5, "tags": [],'
        b' "props": null, "other": [[{"x": 1}]]}',
    ]
    cols = json_columns(values)
    assert cols is not None
    events = _parsed(values)
    assert events is not None
    _same(cols, events)


@pytest.mark.parametrize(
    "odd",
    [
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1, "x": '
        + b"[" * 16
        + b"]" * 16
        + b"}",  # 17 brackets: more than parse_json reads
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1, "x": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}",
        b'{"event_id": "e", "user_id": "u", "type": "$forget", "ts": 1}',
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1, "value": 1e400}',
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 4102444801}',
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": "1"}',
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1, "props": {}}',
        b'{"event_id": "e", "user_id": "u\xff", "type": "view", "ts": 1}',
        b'{"event_id": 7, "user_id": "u", "type": "view", "ts": 1}',
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1}{}',
    ],
)
def test_a_batch_with_one_record_not_plain_is_read_one_by_one(odd: bytes) -> None:
    plain = b'{"event_id": "p", "user_id": "u", "type": "view", "ts": 2}'
    assert json_columns([plain]) is not None
    assert json_columns([plain, odd, plain]) is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.sampled_from(["c1", "c2"])),
            st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=3).map(tuple),
        ),
        max_size=8,
    )
)
def test_the_columns_topics_are_each_events_topics(
    spec: list[tuple[str | None, tuple[str, ...]]],
) -> None:
    events = [Event(f"e{k}", "u", "view", 1.0, category=c, tags=g) for k, (c, g) in enumerate(spec)]
    flat, starts = EventColumns.of(events).topics()
    assert starts[0] == 0 and len(starts) == len(events) + 1
    assert [tuple(flat[starts[k] : starts[k + 1]]) for k in range(len(events))] == [
        e.topics() for e in events
    ]
    assert starts[-1] == len(flat) and all(type(s) is int for s in starts)

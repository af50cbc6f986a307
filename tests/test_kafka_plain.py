"""The Kafka apply path's fast lanes give the same store as the general ones.

* A batch of simple events (no properties, no command; with or without anonymous ids) goes to
  the compiled step as :class:`~liveprofile.events.columns.EventColumns` (read at once by
  ``events.jsonbatch.json_columns``, or laid out by ``kafka.partition.as_columns`` after a
  record-by-record parse); the store it commits is byte for byte the one the same records
  commit as a list of events, for plain events and for a shop whose visitors log in.
* Records without escapes or DEL are decoded without the ids' pattern (``EventParser``): the
  events and the errors are the ones the full decoder gives.
"""

from __future__ import annotations

import uuid
from typing import Any

import kafka_helpers as kh
import msgspec
import pytest
import redis

from liveprofile.config import PipelineConfig
from liveprofile.datasets.logins import with_logins
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.local import RunStats
from liveprofile.errors import InvalidEvent
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import EventParser, _RawEvent
from liveprofile.kafka import partition
from liveprofile.kafka.partition import apply_records, load_partition
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import check_config

URL = "redis://127.0.0.1:6379/0"


def _lines(logins: bool = False) -> list[bytes]:
    raw = list(generate(SyntheticConfig(users=80, items=60, days=3, seed=11)))
    if logins:  # anonymous until the first purchase, which links the visitor to the user
        raw = list(with_logins(raw))
    lines = [msgspec.json.encode(e) for e in raw]
    lines[40] = b'{"event_id": "bad", "type": "view"}'  # a dead letter in the first batch
    return lines


def _applied(lines: list[bytes], prefix: str) -> dict[bytes, Any]:
    """Every key of the store after applying ``lines`` in batches of 500, and its value (the
    links too)."""
    config = PipelineConfig()
    store = FencedRedisStore(URL, prefix=prefix)
    client = redis.Redis.from_url(URL)
    try:
        check_config(store, config)
        owned, _ = load_partition(store, config, "t", 0, {})
        parser, stats = EventParser(), RunStats()
        for start in range(0, len(lines), 500):
            records = [(o, lines[o]) for o in range(start, min(start + 500, len(lines)))]
            assert apply_records(store, "t", owned, records, stats, parser) is not None
        assert stats.dead_letters == 1 and stats.events > 0
        return kh.raw_snapshot(client, prefix)
    finally:
        store.drop()
        store.close()
        client.close()


@pytest.mark.parametrize("logins", [False, True], ids=["user-ids", "logins"])
def test_simple_batches_as_columns_commit_the_store_a_list_commits(
    monkeypatch: pytest.MonkeyPatch, logins: bool
) -> None:
    lines = _lines(logins)
    seen: list[str] = []
    as_columns = partition.as_columns

    def spy(events: Any) -> Any:
        out = as_columns(events)
        seen.append(type(out).__name__)
        return out

    monkeypatch.setattr(partition, "as_columns", spy)
    columns = _applied(lines, f"plain-{uuid.uuid4().hex[:8]}")
    assert seen and set(seen) == {EventColumns.__name__}
    monkeypatch.setattr(partition, "as_columns", lambda events: events)
    monkeypatch.setattr(partition, "json_columns", lambda values: None)
    listed = _applied(lines, f"plain-{uuid.uuid4().hex[:8]}")
    assert any(b"profile" in key for key in columns)
    assert any(b"alias" in key or b"link" in key for key in columns) == logins
    assert columns == listed


def test_a_batch_with_properties_stays_a_list() -> None:
    parser = EventParser()
    plain = parser.parse_json(b'{"event_id": "e1", "user_id": "u1", "type": "view", "ts": 5}')
    anonymous = parser.parse_json(
        b'{"event_id": "e2", "anonymous_id": "a1", "type": "view", "ts": 6}'
    )
    props = parser.parse_json(
        b'{"event_id": "e3", "user_id": "u1", "type": "view", "ts": 7, "props": {"k": 1}}'
    )
    assert isinstance(partition.as_columns([plain]), EventColumns)
    visits = partition.as_columns([plain, anonymous])
    assert isinstance(visits, EventColumns) and not visits.plain
    assert list(visits) == [plain, anonymous]
    assert partition.as_columns([props, plain]) == [props, plain]
    assert partition.as_columns([]) == []


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_id": "e\\u0001", "user_id": "u", "type": "view", "ts": 1}',
        b'{"event_id": "e", "user_id": "u\\n", "type": "view", "ts": 1}',
        b'{"event_id": "e", "user_id": "u", "item_id": "i\x7f", "type": "view", "ts": 1}',
        b'{"event_id": "e", "anonymous_id": "\\u007f", "type": "view", "ts": 1}',
        b'{"event_id": "e\x01", "user_id": "u", "type": "view", "ts": 1}',
        b'{"event_id": "", "user_id": "u", "type": "view", "ts": 1}',
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1, "tags": [""]}',
    ],
)
def test_control_characters_in_ids_are_refused_with_or_without_escapes(raw: bytes) -> None:
    parser = EventParser()
    with pytest.raises(InvalidEvent) as got:
        parser.parse_json(raw)
    full = msgspec.json.Decoder(_RawEvent)
    with pytest.raises((msgspec.ValidationError, msgspec.DecodeError)) as want:
        full.decode(raw)
    assert str(want.value) in str(got.value)


def test_escaped_and_plain_texts_decode_to_the_same_event() -> None:
    parser = EventParser()
    escaped = b'{"event_id": "\\u00e9", "user_id": "\\u0075", "type": "View", "ts": 1.5}'
    plain = '{"event_id": "\u00e9", "user_id": "u", "type": "View", "ts": 1.5}'.encode()
    assert parser.parse_json(escaped) == parser.parse_json(plain)
    assert parser.parse_json(plain).event_id == "\u00e9"

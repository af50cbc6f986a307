"""Events: parsing and validation, JSON Lines and CSV sources, dead letters, de-duplication."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from liveprofile.datasets import movielens
from liveprofile.errors import InvalidEvent, SourceError
from liveprofile.events import DeadLetter, DeadLetterFile, Event, EventParser
from liveprofile.events.deadletter import read_dead_letters
from liveprofile.events.dedup import DedupWindow
from liveprofile.events.schema import MAX_LINE, MAX_TAGS
from liveprofile.events.sources import Batch, CsvSource, JsonlSource

T2017 = 1483228800.0  # 2017-01-01T00:00:00Z


@pytest.fixture
def parser() -> EventParser:
    return EventParser()


def raw(**fields: object) -> str:
    base: dict[str, object] = {"event_id": "e1", "user_id": "u1", "type": "view", "ts": T2017}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...})


# -- valid events ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts, expected",
    [
        (1483228800, T2017),
        (1483228800.25, T2017 + 0.25),
        ("1483228800", T2017),
        ("2017-01-01T00:00:00Z", T2017),
        ("2017-01-01T02:00:00+02:00", T2017),
        ("2016-12-31T19:00:00-05:00", T2017),
        ("2017-01-01T00:00:00", T2017),  # naive is UTC
        ("2017-01-01 00:00:00", T2017),
        ("2017-01-01", T2017),
        ("2017-01-01T00:00:00.500Z", T2017 + 0.5),
        (0, 0.0),
    ],
)
def test_timestamps(parser: EventParser, ts: object, expected: float) -> None:
    e = parser.parse_json(raw(ts=ts))
    assert e.ts == expected
    assert isinstance(e.ts, float)


def test_full_event_is_normalised(parser: EventParser) -> None:
    e = parser.parse_json(
        raw(
            event_id=42,
            user_id=7,
            type="Purchase",
            item_id=31,
            category="dairy",
            tags=["organic", "sale"],
            value=3,
            props={"channel": "app", "n": 2, "ok": True, "none": None},
        )
    )
    assert e == Event(
        event_id="42",
        user="7",
        type="purchase",
        ts=T2017,
        item_id="31",
        category="dairy",
        tags=("organic", "sale"),
        value=3.0,
        props={"channel": "app", "n": 2, "ok": True, "none": None},
    )
    assert isinstance(e.value, float)
    assert e.topics() == ("dairy", "organic", "sale")


def test_anonymous_id_is_the_user_when_no_user_id(parser: EventParser) -> None:
    e = parser.parse_json(raw(user_id=..., anonymous_id="anon-9"))
    assert (e.user, e.anonymous_id) == ("anon-9", "anon-9")
    both = parser.parse_json(raw(user_id="u5", anonymous_id="anon-9"))
    assert (both.user, both.anonymous_id) == ("u5", "anon-9")


def test_bytes_and_str_and_fields_agree(parser: EventParser) -> None:
    text = raw(value=4.5, item_id="m1", category="drama")
    from_fields = parser.parse_fields(
        {"event_id": "e1", "user_id": "u1", "type": "view", "ts": str(T2017), "value": "4.5",
         "item_id": "m1", "category": "drama"}
    )  # fmt: skip
    assert parser.parse_json(text) == parser.parse_json(text.encode()) == from_fields


def test_numeric_ids_become_strings_and_types_lower_case(parser: EventParser) -> None:
    for _ in range(2):  # the second time, the type is known
        e = parser.parse_json(raw(event_id=7, user_id=8, item_id=9, type="Add_To_Cart"))
        assert (e.event_id, e.user, e.item_id, e.type) == ("7", "8", "9", "add_to_cart")


def test_empty_tags_and_props_are_normalised_away(parser: EventParser) -> None:
    e = parser.parse_json(raw(tags=[], props={}))
    assert e.tags == () and e.props is None and e.topics() == ()


# -- invalid events ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, reason",
    [
        (raw(user_id=...), "neither 'user_id' nor 'anonymous_id'"),
        (raw(user_id=None), "neither 'user_id' nor 'anonymous_id'"),
        (raw(user_id=""), "length >= 1 - at `$.user_id`"),
        (raw(ts=...), "missing required field `ts`"),
        (raw(event_id=...), "missing required field `event_id`"),
        (raw(type=...), "missing required field `type`"),
        (raw(ts=1483228800000), "outside 1970..2100 in epoch seconds (milliseconds given?)"),
        (raw(ts=-1), "outside 1970..2100"),
        (raw(ts="nan"), "outside 1970..2100"),
        (raw(ts="yesterday"), "neither epoch seconds nor an ISO 8601 time"),
        (raw(ts=True), "got `bool` - at `$.ts`"),
        ('{"event_id":"e1","user_id":"u1","type":"view","ts":1,"value":1e999}', "$.value"),
        (raw(value="abc"), "Expected `int | float | null`, got `str` - at `$.value`"),
        (raw(user_id=1.5), "got `float` - at `$.user_id`"),
        (raw(tags=[f"t{i}" for i in range(MAX_TAGS + 1)]), f"length <= {MAX_TAGS} - at `$.tags`"),
        (raw(tags=["x" * 65]), "length <= 64 - at `$.tags[0]`"),
        (raw(event_id="e" * 129), "length <= 128 - at `$.event_id`"),
        (raw(user_id="u" * 129), "length <= 128 - at `$.user_id`"),
        (raw(type="add to cart"), "'type' 'add to cart' must be a word"),
        (raw(type="VIEW!"), "'type' 'VIEW!' must be a word"),
        (raw(event_id=10**130), "'event_id' is longer than 128"),
        (raw(user_id=10**130), "'user_id' is longer than 128"),
        (raw(user_id=None, anonymous_id=10**130), "'anonymous_id' is longer than 128"),
        (raw(anonymous_id=10**130), "'anonymous_id' is longer than 128"),
        (raw(item_id=10**130), "'item_id' is longer than 128"),
        (raw(props={"nested": {"a": 1}}), "$.props"),
        ('{"event_id": "e1", "user_id": ', "not valid JSON"),
        ("not json at all", "not valid JSON"),
        ("[1, 2]", "Expected `object`, got `array`"),
        (raw(props={"p": "x" * MAX_LINE}), f"more than the limit of {MAX_LINE}"),
    ],
)
def test_invalid_events_say_why(parser: EventParser, line: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parser.parse_json(line)
    assert reason in str(info.value)
    assert info.value.exit_code == 65 and info.value.http_status == 422


@pytest.mark.parametrize(
    "fields, reason",
    [
        ({"value": float("nan")}, "'value' must be a finite number"),
        ({"value": "inf"}, "'value' must be a finite number"),
        ({"ts": float("inf")}, "outside 1970..2100"),
        ({"ts": "1483228800000"}, "milliseconds given?"),
    ],
)
def test_invalid_fields_say_why(
    parser: EventParser, fields: dict[str, object], reason: str
) -> None:
    base: dict[str, object] = {"event_id": "e1", "user_id": "u1", "type": "view", "ts": T2017}
    with pytest.raises(InvalidEvent, match=re.escape(reason)):
        parser.parse_fields({**base, **fields})


HUGE = "9" * 400
#: lines that make EventParser raise something other than InvalidEvent
CRASHERS = {
    "huge_ts": raw(ts=0).replace('"ts": 0', f'"ts": {HUGE}').encode(),
    "huge_value": raw(value=0).replace('"value": 0', f'"value": {HUGE}').encode(),
    "latin1": raw(category="CATEGORY").encode().replace(b"CATEGORY", "caf\u00e9".encode("latin-1")),
    "bad_utf8_byte": raw(user_id="USER").encode().replace(b"USER", b"u\xff"),
}
CRASH_REASON = (
    "events/schema.py EventParser.parse_json only turns msgspec.ValidationError/DecodeError "
    "into InvalidEvent: (1) a JSON integer too big for a float decodes as a Python int and "
    "float(...) in parse_timestamp (line 107, 'ts') or _normalise (line 153, 'value') raises "
    "OverflowError; (2) invalid UTF-8 inside a JSON string (a Latin-1 file, one corrupt byte) "
    "makes msgspec raise UnicodeDecodeError. Either escapes the parser"
)


@pytest.mark.parametrize("line", list(CRASHERS.values()), ids=list(CRASHERS))
def test_malformed_input_is_invalid_not_a_crash(parser: EventParser, line: bytes) -> None:
    with pytest.raises(InvalidEvent):
        parser.parse_json(line)


# -- JSON Lines source -------------------------------------------------------------------------


def _write_jsonl(path: Path) -> list[bytes]:
    lines = []
    for i in range(23):
        if i == 5:
            lines.append(b'{"event_id": "bad-json", ')
        elif i == 11:
            lines.append(b"")  # blank lines are skipped
        elif i == 14:
            lines.append(raw(event_id=f"e{i}", ts=1483228800000).encode())
        else:
            lines.append(raw(event_id=f"e{i}", user_id=f"u{i % 4}", ts=T2017 + i).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def test_jsonl_reads_everything_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = _write_jsonl(path)
    source = JsonlSource(path)
    assert source.total == path.stat().st_size and source.unit == "bytes"
    batches = list(source.batches(0, 4))
    events = [e.event_id for b in batches for e in b.events]
    assert events == [f"e{i}" for i in range(23) if i not in (5, 11, 14)]
    assert all(len(b.events) + len(b.dead_letters) <= 4 for b in batches)
    assert batches[-1].offset == path.stat().st_size
    assert sum(b.progress for b in batches) == path.stat().st_size
    letters = [d for b in batches for d in b.dead_letters]
    assert [d.raw for d in letters] == [lines[5].decode().strip(), lines[14].decode()]
    assert "not valid JSON" in letters[0].reason and "milliseconds" in letters[1].reason
    data = path.read_bytes()
    for letter in letters:  # the offset is where the bad line starts
        assert data[letter.offset :].startswith(letter.raw.encode())
        assert letter.offset == 0 or data[letter.offset - 1 : letter.offset] == b"\n"
        assert letter.source == source.name


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_jsonl_resumes_from_a_committed_offset(tmp_path: Path, split: int) -> None:
    path = tmp_path / "events.jsonl"
    _write_jsonl(path)
    source = JsonlSource(path)
    whole = list(source.batches(0, 4))
    first = whole[:split]
    second = list(JsonlSource(path).batches(first[-1].offset, 4))

    def content(batches: list[Batch]) -> tuple[list[Event], list[DeadLetter]]:
        return (
            [e for b in batches for e in b.events],
            [d for b in batches for d in b.dead_letters],
        )

    assert content(first + second) == content(whole)
    assert [b.offset for b in first + second] == [b.offset for b in whole]


def test_jsonl_handles_crlf_and_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        (raw(event_id="a") + "\r\n" + raw(event_id="b") + "\r\n" + raw(event_id="c")).encode()
    )
    batches = list(JsonlSource(path).batches(0, 2))
    assert [e.event_id for b in batches for e in b.events] == ["a", "b", "c"]
    assert batches[0].offset == len(raw(event_id="a")) + 2 + len(raw(event_id="b")) + 2
    assert batches[-1].offset == path.stat().st_size
    assert list(JsonlSource(path).batches(path.stat().st_size, 2)) == []


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        JsonlSource(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("bad", list(CRASHERS), ids=list(CRASHERS))
def test_jsonl_never_crashes_on_input(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(raw(event_id="a").encode() + b"\n" + CRASHERS[bad] + b"\n")
    (batch,) = JsonlSource(path).batches(0, 10)
    assert [e.event_id for e in batch.events] == ["a"]
    assert len(batch.dead_letters) == 1


# -- CSV source --------------------------------------------------------------------------------

RATINGS = "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,x,y,z\n2,10,4.0,835355493\n"
# the MovieLens mapping, as the movielens preset uses it
MAPPING = movielens.MAPPING


def test_csv_maps_columns_and_dead_letters_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(RATINGS)
    source = CsvSource(path, MAPPING, constants={"type": "rate"}, item_tags={"10": ["Action"]})
    (batch,) = source.batches(0, 10)
    assert [(e.event_id, e.user, e.item_id, e.value, e.ts, e.tags) for e in batch.events] == [
        ("1:31", "1", "31", 2.5, 1260759144.0, ()),
        ("2:10", "2", "10", 4.0, 835355493.0, ("Action",)),
    ]
    (letter,) = batch.dead_letters
    assert (letter.raw, letter.offset) == ("1,x,y,z", 1)
    assert "$.value" in letter.reason
    assert batch.offset == 3 == source.total


def test_csv_resumes_from_a_row_offset(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(RATINGS)
    source = CsvSource(path, MAPPING, constants={"type": "rate"})
    whole = list(source.batches(0, 1))
    assert [b.offset for b in whole] == [1, 2, 3]
    rest = list(source.batches(2, 1))
    assert [e.event_id for b in rest for e in b.events] == ["2:10"]
    assert rest[-1].offset == 3


def test_csv_unknown_column_names_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(RATINGS)
    with pytest.raises(SourceError) as info:
        CsvSource(path, {**MAPPING, "ts": "time"}, constants={"type": "rate"})
    message = str(info.value)
    assert "'time'" in message and "'ts'" in message and "ratings.csv" in message
    assert "userId, movieId, rating, timestamp" in message


def test_csv_unknown_column_in_a_template(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(RATINGS)
    with pytest.raises(SourceError, match="nope"):
        CsvSource(path, {**MAPPING, "event_id": "{nope}:{movieId}"}, constants={"type": "rate"})


def test_csv_empty_optional_cells_are_absent(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("user,item,cat,price,t\n1,i1,,2.5,100\n2,i2,books,,200\n")
    source = CsvSource(
        path,
        {"user_id": "user", "item_id": "item", "category": "cat", "value": "price", "ts": "t"},
        constants={"type": "purchase"},
    )
    (batch,) = source.batches(0, 10)
    assert batch.dead_letters == []
    assert [(e.category, e.value) for e in batch.events] == [(None, 2.5), ("books", None)]


def test_csv_empty_or_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SourceError, match="empty"):
        CsvSource(empty, {"user_id": "u"})
    with pytest.raises(SourceError, match="no such file"):
        CsvSource(tmp_path / "nope.csv", {"user_id": "u"})


# -- dead letters ------------------------------------------------------------------------------


def _letter(n: int) -> DeadLetter:
    return DeadLetter(raw=f'{{"bad": {n}', reason=f"reason {n}", source="test", offset=n * 10)


def test_dead_letters_truncate_to_the_committed_size(tmp_path: Path) -> None:
    path = tmp_path / "dead" / "letters.jsonl"
    sink = DeadLetterFile(path)
    sink.write([_letter(0), _letter(1)])
    sink.flush()
    committed = sink.committed_size()
    assert committed == path.stat().st_size > 0
    sink.write([_letter(2)])  # written, then the process dies before the store commit
    sink.flush()
    sink.close()
    assert len(read_dead_letters(path)) == 3

    again = DeadLetterFile(path)  # what a restart does
    assert again.committed_size() == path.stat().st_size
    again.truncate(committed)
    assert path.stat().st_size == committed == again.committed_size()
    again.write([_letter(3)])
    again.flush()
    again.close()
    assert read_dead_letters(path) == [_letter(0), _letter(1), _letter(3)]


def test_dead_letters_truncate_never_grows(tmp_path: Path) -> None:
    path = tmp_path / "letters.jsonl"
    sink = DeadLetterFile(path)
    sink.write([_letter(0)])
    sink.flush()
    size = path.stat().st_size
    sink.truncate(size + 100)
    assert path.stat().st_size == size
    sink.truncate(0)
    sink.write([_letter(1)])
    sink.close()
    assert read_dead_letters(path) == [_letter(1)]


# -- de-duplication ----------------------------------------------------------------------------


def test_dedup_evicts_by_count() -> None:
    window = DedupWindow(size=3)
    assert [window.add(e) for e in ["a", "b", "c", "a", "d"]] == [True, True, True, False, True]
    assert len(window) == 3  # "a" is the oldest and was evicted by "d"
    assert window.add("a") is True  # forgotten: accepted again, and evicts "b"
    assert window.add("b") is True
    assert [window.add(e) for e in ["d", "a", "b"]] == [False, False, False]
    assert window.add("c") is True


def test_dedup_take_new_and_restore() -> None:
    window = DedupWindow(size=4)
    for e in ["a", "b", "a", "c"]:
        window.add(e)
    assert window.take_new() == ["a", "b", "c"]
    assert window.take_new() == []
    restored = DedupWindow(size=2)
    restored.restore(["a", "b", "c"])
    assert restored.take_new() == []
    assert len(restored) == 2
    assert restored.add("c") is False and restored.add("a") is True


def test_dedup_window_of_zero_remembers_nothing() -> None:
    window = DedupWindow(size=0)
    assert [window.add("a") for _ in range(3)] == [True, True, True]
    assert len(window) == 0 and window.take_new() == []

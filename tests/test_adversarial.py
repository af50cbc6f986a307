"""The standing adversarial suite: malformed records of many kinds mixed into a clean stream.

Hypothesis draws which bad records to insert and where. Whatever it draws, every bad record must
be dead-lettered with a reason, the clean records must all be applied, and the store must hold
exactly the profiles, item statistics, pending examples and watermark of a replay of the clean
stream alone. Clean records also come with format noise that must not matter: a byte order mark
before the first line and CRLF line ends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveprofile import api
from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.errors import InvalidEvent
from liveprofile.events import EventParser
from liveprofile.events.deadletter import read_dead_letters
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store import open_store

REDIS = "redis://127.0.0.1:6379/0"

CONFIG = PipelineConfig.from_toml(
    """
[run]
batch_size = 100000
[events]
allowed_lateness = "30d"
[segments]
buyers = "frequency >= 1"
"""
)
CLEAN = [json.dumps(e) for e in generate(SyntheticConfig(users=12, items=15, days=2, seed=4))]
FIRST = json.loads(CLEAN[0])
T = float(FIRST["ts"])
KNOWN = sorted({json.loads(line)["user_id"] for line in CLEAN})


def _event(**fields: Any) -> dict[str, Any]:
    base = {"event_id": "bad", "user_id": "mallory", "type": "view", "ts": T + 60}
    return {**base, **fields}


def _line(**fields: Any) -> bytes:
    return json.dumps(_event(**fields)).encode()


def _nested(depth: int) -> bytes:
    return _line(props=0).replace(b'"props": 0', b'"props": ' + b"[" * depth + b"]" * depth)


# each strategy gives one bad record (the raw bytes of one line)
BAD: dict[str, st.SearchStrategy[bytes]] = {
    "broken JSON": st.integers(1, 40).map(lambda k: CLEAN[3].encode()[:k]),
    "not an object": st.sampled_from([b"[]", b"42", b'"text"', b"null", b"{", b"}{"]),
    "wrong types": st.sampled_from(
        [
            _line(user_id=[1]),
            _line(ts={"a": 1}),
            _line(value="12"),
            _line(tags="a"),
            _line(type=7),
            _line(event_id=1.5),
            _line(props={"k": [1]}),
            _line(ts=True),
        ]
    ),
    "missing fields": st.sampled_from(
        [
            _line(user_id=None),
            b'{"event_id": "x", "user_id": "u", "ts": 1.7e9}',
            b'{"event_id": "x", "user_id": "u", "type": "view"}',
        ]
    ),
    "non-finite": st.sampled_from(
        [
            _line().replace(b'"ts": ', b'"ts": 1e999, "x": '),
            b'{"value": NaN}',
            _line(type="purchase").replace(b'"ts"', b'"value": -1e999, "ts"'),
            _line(ts="Infinity"),
            _line(ts="nan"),
        ]
    ),
    "extreme value": st.one_of(
        st.floats(1e9 + 1, 1e300).map(lambda v: _line(type="purchase", value=v)),
        st.floats(-1e300, -1e9 - 1).map(lambda v: _line(type="purchase", value=v)),
        st.integers(10**10, 10**30).map(lambda v: _line(value=v)),
    ),
    "deep nesting": st.integers(17, 3000).map(_nested),
    "huge string": st.sampled_from(
        [
            _line(category="c" * 65),
            _line(user_id="u" * 129),
            _line(item_id="i" * 1000),
            _line(props={"k": "v" * 70_000}),
            _line(tags=["t"] * 33),
        ]
    ),
    "bad UTF-8": st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82"]).map(
        lambda b: _line(props={"note": "X"}).replace(b"X", b"note" + b)
    ),
    "NUL": st.sampled_from(
        [
            _line().replace(b"mallory", b"mal\x00lory"),
            _line(user_id="mal\u0000lory"),
            _line(event_id="e\u0000"),
            b"\x00" * 8,
        ]
    ),
    "odd ids": st.sampled_from(
        [
            _line(user_id=""),
            _line(event_id=""),
            _line(user_id="a\nb"),
            _line(item_id="\t"),
            _line(type="view\n"),
            _line(type=""),
            _line(type="Über"),
            _line(type="a b"),
            _line(user_id=None, anonymous_id=None),
        ]
    ),
    "far future": st.sampled_from(["2099-12-31T00:00:00Z", 4_000_000_000, "2030-01-01"]).map(
        lambda ts: _line(ts=ts)
    ),
    "far past": st.sampled_from(["1971-01-01T00:00:00Z", -5, 1e6, "2023-01-01"]).map(
        lambda ts: _line(ts=ts)
    ),
    "unit mistakes": st.sampled_from([_line(ts=T * 1000), _line(ts="yesterday")]),
    "commands": st.sampled_from(KNOWN).flatmap(
        lambda u: st.sampled_from(
            [
                _line(type="$forget", user_id=u),
                _line(type="$merge", user_id="mallory", anonymous_id=u),
            ]
        )
    ),
}
KINDS = sorted(BAD)
#: takeover attempts go last: by then every clean user is known
TAKEOVER = st.sampled_from(KNOWN).map(lambda u: _line(anonymous_id=u, ts=T + 2 * 86400))


def _store_state(folder: Path) -> dict[str, Any]:
    store = open_store(str(folder / "p.db"))
    try:
        rows = {ns: dict(store.scan(ns)) for ns in ("profile", "item", "pending", "alias")}
        rows["segment"] = dict(store.scan("segment:buyers"))
        rows["population"] = store.get_meta("population")
        return rows
    finally:
        store.close()


def _replay(folder: Path, data: bytes) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "in.jsonl").write_bytes(data)
    return api.replay(folder / "in.jsonl", store=folder / "p.db", config=CONFIG, progress=False)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("clean")
    result = _replay(folder, "\n".join(CLEAN).encode() + b"\n")
    assert result["dead_letters"] == 0 and result["events"] == len(CLEAN)
    return _store_state(folder)


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    picks=st.lists(
        st.tuples(st.sampled_from(KINDS), st.integers(0, len(CLEAN))), min_size=1, max_size=25
    ).flatmap(lambda ps: st.tuples(*(st.tuples(st.just(k), st.just(at), BAD[k]) for k, at in ps))),
    takeovers=st.lists(TAKEOVER, max_size=2),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_bad_records_are_dead_lettered_and_change_nothing_else(
    clean: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
    picks: tuple[tuple[str, int, bytes], ...],
    takeovers: list[bytes],
    bom: bool,
    crlf: bool,
) -> None:
    lines: list[bytes] = [c.encode() for c in CLEAN]
    for k, (_, at, raw) in enumerate(sorted(picks, key=lambda p: -p[1])):
        bad = raw.replace(b'"bad"', f'"bad-{k}"'.encode())
        lines.insert(at, bad)
    lines += takeovers
    end = b"\r\n" if crlf else b"\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + end.join(lines) + end
    # a bad record that holds a line break is two records (or more): count physical lines
    bad_lines = len(data.replace(b"\r\n", b"\n").splitlines()) - len(CLEAN)
    folder = tmp_path_factory.mktemp("dirty")
    result = _replay(folder, data)
    letters = read_dead_letters(folder / "p.db.deadletters.jsonl")
    kinds = [kind for kind, _, _ in picks]
    assert result["events"] == len(CLEAN), kinds
    assert len(letters) == result["dead_letters"] == bad_lines, kinds
    assert all(letter.reason.strip() for letter in letters)
    assert _store_state(folder) == clean, kinds


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(raw=st.one_of(*BAD.values(), st.binary(max_size=300)))
def test_the_parser_only_ever_raises_invalid_event(raw: bytes) -> None:
    try:
        EventParser().parse_json(raw)
    except InvalidEvent as exc:
        assert str(exc).strip()


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    picks=st.lists(st.sampled_from(KINDS), min_size=5, max_size=15).flatmap(
        lambda ks: st.tuples(*(BAD[k] for k in ks))
    ),
    takeovers=st.lists(TAKEOVER, max_size=2),
)
def test_published_bad_records_are_dead_lettered_by_the_worker(
    clean: dict[str, Any], picks: tuple[bytes, ...], takeovers: list[bytes]
) -> None:
    """The same through ``publish`` and a worker: nothing stops either of them."""
    prefix = f"adversarial-{abs(hash((picks, tuple(takeovers)))):x}"
    client = redis.Redis.from_url(REDIS)
    try:
        lines = [c.encode() for c in CLEAN]
        for k, raw in enumerate(picks):
            lines.insert((k * 37) % len(lines), raw.replace(b'"bad"', f'"bad-{k}"'.encode()))
        data = b"\n".join([*lines, *takeovers]) + b"\n"
        # one partition: a takeover must come after its victim's events, as in the file
        stats = publish(client, prefix, 1, data.splitlines())
        store = RedisStore(REDIS, prefix=prefix)
        options = WorkerOptions(prefix, [0], batch_size=64, block_ms=20)
        worker = RedisWorker(CONFIG, store, redis.Redis.from_url(REDIS), options)
        run = worker.run(max_idle_polls=2)
        worker.client.close()
        assert run.events == len(CLEAN)
        assert run.dead_letters == stats.published - len(CLEAN)
        for ns in ("profile", "item"):
            assert dict(store.scan(ns)) == clean[ns], ns
        store.close()
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()

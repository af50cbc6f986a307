"""Operating the Redis path against a real redis-server: status (lag, pending, checkpoint),
the stored dead letters, and re-driving corrected dead letters through the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from redis_server import running

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.engine.local import RunStats
from liveprofile.errors import InvalidEvent
from liveprofile.events.schema import EventParser
from liveprofile.redis.ops import list_dead_letters, redrive, stream_status
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import publish, stream_key
from liveprofile.redis.worker import RedisWorker, WorkerOptions

CONFIG = PipelineConfig.from_toml("[run]\nbatch_size = 100\n[features]\nbits = 12\n")
PREFIX = "ops"
TIMEOUT = 30.0
CLI = [str(Path(sys.executable).with_name("liveprofile"))]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own, on a free port, without persistence."""
    for server in running(tmp_path_factory.mktemp("redis-ops"), appendonly=False):
        yield server.url


def _cli(*args: str, code: int = 0) -> str:
    done = subprocess.run([*CLI, *args], capture_output=True, timeout=TIMEOUT, check=False)
    assert done.returncode == code, done.stderr.decode()
    return done.stdout.decode()


def _status(url: str) -> dict[str, Any]:
    out = _cli("status", "--redis", url, "--prefix", PREFIX, "--json", "--sample-seconds", "0.05")
    result: dict[str, Any] = json.loads(out)
    return result


def _run_worker(url: str) -> RunStats:
    client = redis.Redis.from_url(url)
    store = RedisStore(url, prefix=PREFIX)
    worker = RedisWorker(
        CONFIG, store, client, WorkerOptions(PREFIX, [0, 1], batch_size=100, block_ms=50)
    )
    try:
        return worker.run(max_idle_polls=4)
    finally:
        store.close()
        client.close()


def _malformed(path: Path) -> list[str]:
    """The lines of ``path`` the worker must reject."""
    parser, bad = EventParser(), []
    for line in path.read_bytes().splitlines():
        try:
            parser.parse_json(line)
        except InvalidEvent:
            bad.append(line.decode())
    return bad


def test_status_dead_letters_and_redrive(url: str, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    written = write_jsonl(events, SyntheticConfig(users=40, days=4, seed=3), invalid_rate=0.05)
    client = redis.Redis.from_url(url)
    with open(events, "rb") as fh:
        published = publish(client, PREFIX, 2, fh)
    assert published.published == written.lines and set(published.per_partition) == {0, 1}

    # before any worker: no group yet, so every entry is lag
    before = _status(url)
    assert [s["partition"] for s in before["streams"]] == [0, 1]
    for s in before["streams"]:
        assert s["length"] == published.per_partition[s["partition"]]
        assert s["lag"] == s["length"] and s["pending"] == 0 and not s["group_exists"]
    assert before["store"]["events"] == 0 and before["store"]["watermark"] is None
    assert "no consumer group yet" in _cli("status", "--redis", url, "--prefix", PREFIX)

    stats = _run_worker(url)
    assert stats.dead_letters == written.invalid > 0
    assert stats.events + stats.duplicates == written.valid + written.duplicates

    after = _status(url)
    for s in after["streams"]:
        assert s["group_exists"] and s["lag"] == 0 and s["pending"] == 0
        assert s["pending_per_consumer"] == {}  # XPENDING lists consumers with pending entries
        assert s["committed_id"] == s["last_entry_id"] == s["last_delivered_id"]
    st = after["store"]
    assert (st["events"], st["duplicates"]) == (stats.events, stats.duplicates)
    assert st["dead_letters"] == st["dead_letters_stored"] == written.invalid
    assert st["watermark"] is not None and st["events_per_s"] == 0.0  # idle while sampled
    assert st["offsets"] == {s["stream"]: s["last_entry_id"] for s in after["streams"]}

    # every malformed line is stored, with a reason, and listed by the CLI
    store = RedisStore(url, prefix=PREFIX)
    letters = list_dead_letters(store)
    assert sorted(d.raw for _, d in letters) == sorted(_malformed(events))
    assert all(d.reason for _, d in letters)
    listed = [
        json.loads(line)
        for line in _cli(
            "redis-dead-letters", "--redis", url, "--prefix", PREFIX, "--json", "--limit", "1000"
        ).splitlines()
    ]
    assert [(r["key"], r["reason"], r["raw"]) for r in listed] == [
        (k, d.reason, d.raw) for k, d in letters
    ]
    assert "dead letters under" in _cli("redis-dead-letters", "--redis", url, "--prefix", PREFIX)

    # corrections: one valid event per dead letter, with a new event_id
    ts = msgspec.json.decode(events.read_bytes().splitlines()[0])["ts"]
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_bytes(
        b"".join(
            msgspec.json.encode(
                {"event_id": f"fixed-{i}", "user_id": f"u{i % 7:05d}", "type": "view", "ts": ts}
            )
            + b"\n"
            for i in range(len(letters))
        )
    )
    keys = [arg for key, _ in letters for arg in ("--key", key)]
    base = ["redrive", "--redis", url, "--prefix", PREFIX, "--partitions", "2"]

    # a mismatch between keys and corrections changes nothing
    _cli(*base, *keys[:2], "--fixed", str(fixed), code=65)
    assert store.count("deadletter") == written.invalid

    result = json.loads(_cli(*base, *keys, "--fixed", str(fixed)))
    assert result["published"] == result["deleted"] == len(letters)
    assert store.count("deadletter") == 0
    lag = _status(url)["streams"]
    assert sum(s["lag"] for s in lag) == len(letters)
    assert "no consumer group yet" not in _cli("status", "--redis", url, "--prefix", PREFIX)

    again = _run_worker(url)
    assert (again.events, again.dead_letters, again.duplicates) == (len(letters), 0, 0)
    final = stream_status(client, store, PREFIX, sample_seconds=0)
    assert all(s.lag == 0 and s.pending == 0 for s in final.streams)
    assert final.store.events == stats.events + len(letters)
    assert final.store.dead_letters_stored == 0 and final.store.events_per_s is None
    store.close()
    client.close()


def test_redrive_raw_dead_letters_again(url: str) -> None:
    """Without corrections the raw input goes back as it was (and is rejected again)."""
    prefix = "ops-raw"
    client = redis.Redis.from_url(url)
    publish(client, prefix, 1, [b'{"event_id": "x", "type": "view"}', b"{broken"])
    store = RedisStore(url, prefix=prefix)
    worker = RedisWorker(CONFIG, store, client, WorkerOptions(prefix, [0], block_ms=50))
    assert worker.run(max_idle_polls=2).dead_letters == 2
    first = list_dead_letters(store)

    result = redrive(client, store, prefix)
    assert (result.published, result.per_partition) == (2, {0: 2})
    assert store.count("deadletter") == 0
    assert worker.run(max_idle_polls=2).dead_letters == 2
    second = list_dead_letters(store)
    assert [d.raw for _, d in second] == [d.raw for _, d in first]
    assert {k for k, _ in second}.isdisjoint(k for k, _ in first)  # new entries, new keys
    store.drop()
    store.close()
    client.close()


def test_lag_counted_when_redis_cannot_tell(url: str) -> None:
    """An entry deleted past the group's position makes XINFO report no lag; count it."""
    prefix = "ops-lag"
    client = redis.Redis.from_url(url)
    stream = stream_key(prefix, 0)
    ids = [client.xadd(stream, {b"e": b"{}"}) for _ in range(5)]
    client.xgroup_create(stream, "liveprofile", id="0")
    client.xreadgroup("liveprofile", "w", {stream: ">"}, count=2)
    client.xdel(stream, ids[3])
    groups = client.xinfo_groups(stream)
    assert groups[0]["lag"] is None
    store = RedisStore(url, prefix=prefix)
    (status,) = stream_status(client, store, prefix, sample_seconds=0).streams
    assert (status.length, status.lag, status.pending) == (4, 2, 2)
    assert status.pending_per_consumer == {"w": 2}
    store.drop()
    store.close()
    client.close()


def test_trimming_worker_leaves_only_the_committed_entry(url: str, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    written = write_jsonl(path, SyntheticConfig(users=20, days=2, seed=9))
    client = redis.Redis.from_url(url)
    store = RedisStore(url, prefix="trim")
    try:
        with path.open("rb") as fh:
            publish(client, "trim", 1, fh)
        stream = stream_key("trim", 0)
        assert client.xlen(stream) == written.lines
        options = WorkerOptions("trim", [0], batch_size=100, block_ms=50, trim=True)
        worker = RedisWorker(CONFIG, store, client, options)
        stats = worker.run(max_idle_polls=3)
        assert stats.events == written.valid
        # everything before the last committed entry is gone; the committed one is kept
        assert client.xlen(stream) == 1
    finally:
        store.drop()
        store.close()
        client.close()

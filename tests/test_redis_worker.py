"""The Redis Streams worker against real Redis servers: same result as a local replay, and
exactly-once effect when the worker is killed or the server restarts."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from children import popen
from redis_server import RedisServer, running

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.engine.local import LocalRunner
from liveprofile.events.deadletter import DeadLetter, read_dead_letters
from liveprofile.events.sources import JsonlSource
from liveprofile.profile.state import decode_profile
from liveprofile.redis.ops import read_checkpoint
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import StreamReader, entry_offset, publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.layout import Checkpoint
from liveprofile.store.memory import MemoryStore

CONFIG = """
[run]
batch_size = 200
[features]
bits = 14
"""
NAMESPACES = ("profile", "item", "pending", "dedup", "deadletter")
TIMEOUT = 60.0


Server = RedisServer


def _server(directory: Path) -> Iterator[Server]:
    yield from running(directory)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    directory = tmp_path / "redis"
    directory.mkdir()
    yield from _server(directory)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(
        path, SyntheticConfig(users=60, days=5, seed=11), invalid_rate=0.02, duplicate_rate=0.02
    )
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(CONFIG)
    return path


def _publish(url: str, prefix: str, events: Path, partitions: int = 1) -> int:
    client = redis.Redis.from_url(url)
    with open(events, "rb") as fh:
        stats = publish(client, prefix, partitions, fh)
    client.close()
    return stats.published


def _dump(url: str, prefix: str) -> dict[str, dict[str, bytes]]:
    client = redis.Redis.from_url(url)
    out = {}
    for ns in (*NAMESPACES, "meta"):
        rows = client.hgetall(f"{prefix}:{ns}")
        out[ns] = {k.decode(): bytes(v) for k, v in rows.items()}
    client.close()
    store = RedisStore(url, prefix=prefix)  # a model: its whole write with its deltas replayed
    for name in out["meta"]:
        if name.startswith("model/"):
            out["meta"][name] = store.get_meta(name) or b""
    store.close()
    return out


def _dead_letter_stream(url: str, prefix: str) -> list[tuple[str, str]]:
    """(raw, reason) of every entry of the prefix's dead-letter stream."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        entries = client.xrange(f"{prefix}:deadletters")
    finally:
        client.close()
    return [(fields["raw"], fields["reason"]) for _, fields in entries]


def _checkpoint(blob: bytes) -> Checkpoint:
    return msgspec.msgpack.decode(blob, type=Checkpoint)


def _comparable(dump: dict[str, dict[str, bytes]]) -> dict[str, Any]:
    """A store's contents without what names the stream (keys, entry ids, offsets)."""
    out: dict[str, Any] = {ns: dump[ns] for ns in ("profile", "item", "pending", "dedup")}
    meta = dict(dump["meta"])
    ckpt = _checkpoint(meta.pop("checkpoint"))
    out["checkpoint"] = msgspec.structs.replace(ckpt, offsets={})
    out["meta"] = meta
    letters = [msgspec.json.decode(v, type=DeadLetter) for v in dump["deadletter"].values()]
    out["deadletter"] = sorted((d.raw, d.reason) for d in letters)
    return out


def _worker(url: str, prefix: str, config: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "liveprofile.cli", "worker", "--redis", url, "--prefix", prefix]
    args += ["--partitions", "0", "--of", "1", "--consumer", "w1", "--config", str(config)]
    args += ["--block-ms", "200", "--idle-exit", "3", *extra]
    with open(log, "ab") as err:
        return popen(args, stdout=subprocess.DEVNULL, stderr=err)


def _seq(url: str, prefix: str) -> int:
    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        blob = client.hget(f"{prefix}:meta", "checkpoint")
        client.close()
    except redis.ConnectionError:
        return -1
    return 0 if blob is None else _checkpoint(bytes(blob)).seq


def _wait(what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _committed_or_exited(
    proc: subprocess.Popen[bytes], url: str, target: int
) -> Callable[[], bool]:
    return lambda: proc.poll() is not None or _seq(url, "killed") >= target


def _clean_run(
    url: str, prefix: str, events: Path, config: Path, tmp: Path, *extra: str
) -> dict[str, Any]:
    _publish(url, prefix, events)
    log = tmp / f"{prefix}.log"
    proc = _worker(url, prefix, config, log, *extra)
    assert proc.wait(timeout=TIMEOUT * 2) == 0, log.read_text()
    return _comparable(_dump(url, prefix))


def test_worker_equals_local_replay(server: Server, events: Path, tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(CONFIG)
    published = _publish(server.url, "inproc", events)
    client = redis.Redis.from_url(server.url)
    store = RedisStore(server.url, prefix="inproc")
    worker = RedisWorker(
        config, store, client, WorkerOptions("inproc", [0], batch_size=200, block_ms=100)
    )
    stats = worker.run(max_idle_polls=2)
    store.close()
    client.close()
    assert stats.events + stats.duplicates + stats.dead_letters == published

    memory = MemoryStore()
    runner = LocalRunner(config, memory, tmp_path / "dead.jsonl")
    local_stats = runner.run(JsonlSource(events))
    assert (stats.events, stats.duplicates, stats.dead_letters, stats.batches) == (
        local_stats.events,
        local_stats.duplicates,
        local_stats.dead_letters,
        local_stats.batches,
    )

    dump = _dump(server.url, "inproc")
    for ns in ("profile", "item", "pending", "dedup"):
        assert dump[ns] == dict(memory.scan(ns)), ns
    assert dump["profile"]
    for name, blob in dump["meta"].items():
        if name.startswith(("model/", "metrics/")) or name == "population":
            assert blob == memory.get_meta(name), name
    ckpt, local = (
        _checkpoint(dump["meta"]["checkpoint"]),
        _checkpoint(memory.get_meta("checkpoint") or b""),
    )
    assert msgspec.structs.replace(ckpt, offsets={}, dead_letter_bytes=0) == (
        msgspec.structs.replace(local, offsets={}, dead_letter_bytes=0)
    )
    assert list(ckpt.offsets) == ["inproc:events:0"]

    expected = read_dead_letters(tmp_path / "dead.jsonl")
    assert len(expected) == ckpt.dead_letters > 0
    stored = [msgspec.json.decode(v, type=DeadLetter) for v in dump["deadletter"].values()]
    assert sorted((d.raw, d.reason) for d in stored) == sorted((d.raw, d.reason) for d in expected)
    for key, letter in zip(dump["deadletter"], stored, strict=True):
        assert letter.source == "inproc:events:0" and key.startswith("inproc:events:0:")
    # ... and each is logged once in the dead-letter stream, in the same transaction
    logged = _dead_letter_stream(server.url, "inproc")
    assert sorted(logged) == sorted((d.raw, d.reason) for d in expected)
    runner.close()


def test_killed_worker_resumes_exactly_once(
    server: Server, events: Path, config_file: Path, tmp_path: Path
) -> None:
    # small batches, so that the kills land within a run
    clean = _clean_run(server.url, "clean", events, config_file, tmp_path, "--batch-size", "10")
    _publish(server.url, "killed", events)
    log = tmp_path / "killed.log"
    rng = random.Random(5)
    kills = 0
    for _ in range(3):
        before = _seq(server.url, "killed")
        proc = _worker(server.url, "killed", config_file, log, "--batch-size", "10")
        target = before + rng.randint(1, 4)
        _wait("a commit", _committed_or_exited(proc, server.url, target))
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=TIMEOUT)
    assert kills >= 2, log.read_text()
    proc = _worker(server.url, "killed", config_file, log, "--batch-size", "10")
    assert proc.wait(timeout=TIMEOUT * 2) == 0, log.read_text()
    killed = _comparable(_dump(server.url, "killed"))
    assert killed == clean
    # the dead-letter stream is written in the commit's transaction: no entry twice, none lost
    logged = _dead_letter_stream(server.url, "killed")
    assert sorted(logged) == sorted(_dead_letter_stream(server.url, "clean")) and logged


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["shutdown", "crash"])
def test_worker_survives_redis_restart(
    own_server: Server, events: Path, config_file: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    url = own_server.url
    clean = _clean_run(url, "clean", events, config_file, tmp_path, "--batch-size", "10")
    _publish(url, "restarted", events)
    log = tmp_path / "restarted.log"
    proc = _worker(url, "restarted", config_file, log, "--batch-size", "10", "--idle-exit", "10")
    _wait("a commit", lambda: _seq(url, "restarted") >= 2)
    own_server.stop(sig)
    time.sleep(0.5)
    assert proc.poll() is None, log.read_text()
    own_server.start()
    assert proc.wait(timeout=TIMEOUT * 2) == 0, log.read_text()
    assert _comparable(_dump(url, "restarted")) == clean


def test_worker_waits_for_redis(events: Path, config_file: Path, tmp_path: Path) -> None:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = Server(directory)
    log = tmp_path / "waiting.log"
    proc = _worker(server.url, "waiting", config_file, log, "--idle-exit", "10")
    try:
        _wait("the retry line", lambda: b"redis unreachable" in log.read_bytes())
        assert proc.poll() is None, log.read_text()
        server.start()
        published = _publish(server.url, "waiting", events)
        assert proc.wait(timeout=TIMEOUT * 2) == 0, log.read_text()
        ckpt = _checkpoint(_dump(server.url, "waiting")["meta"]["checkpoint"])
        assert ckpt.events + ckpt.duplicates + ckpt.dead_letters == published
        assert ckpt.events > 0 and ckpt.dead_letters > 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()


def _profiles(url: str, prefix: str) -> dict[str, Any]:
    """Each stored profile without what depends on a worker's model or clock (scores,
    outcomes of delayed examples)."""
    store = RedisStore(url, prefix=prefix)
    try:
        return {
            user: msgspec.structs.replace(
                decode_profile(blob), scores={}, positives={}, examples={}, key_outcomes={}
            )
            for user, blob in store.scan("profile")
        }
    finally:
        store.close()


def test_two_scoped_workers_share_one_prefix(server: Server, events: Path) -> None:
    """With a model per scope (``run.shared_model = false``; the shared model's tests are in
    test_redis_shared.py)."""
    config = PipelineConfig.from_toml(CONFIG.replace("[run]\n", "[run]\nshared_model = false\n"))
    _publish(server.url, "one", events, partitions=2)
    _publish(server.url, "two", events, partitions=2)
    client = redis.Redis.from_url(server.url)
    stores = [RedisStore(server.url, prefix=p) for p in ("one", "two", "two")]
    try:
        single = RedisWorker(config, stores[0], client, WorkerOptions("one", [0, 1], block_ms=50))
        single.run(max_idle_polls=4)
        for store, part in ((stores[1], 0), (stores[2], 1)):
            worker = RedisWorker(
                config, store, client, WorkerOptions("two", [part], block_ms=50, scope=f"p{part}")
            )
            worker.run(max_idle_polls=4)
        # profiles are shared and equal to a single worker's; models and checkpoints are apart
        assert _profiles(server.url, "two") == _profiles(server.url, "one")
        for part in (0, 1):
            blob = stores[1].get_meta(f"checkpoint@p{part}")
            assert blob is not None
            assert list(_checkpoint(blob).offsets) == [f"two:events:{part}"]
            assert stores[1].get_meta(f"model/convert@p{part}") is not None
        assert stores[1].get_meta("checkpoint") is None
        # status adds the scoped checkpoints up to what the single worker committed
        both = read_checkpoint(stores[1], ["p0", "p1"])
        one = read_checkpoint(stores[0])
        assert (both.events, both.dead_letters) == (one.events, one.dead_letters) != (0, 0)
        assert sorted(both.offsets) == sorted(k.replace("one", "two") for k in one.offsets)
    finally:
        for store in stores:
            store.close()
        client.close()


def test_stream_reader_skips_committed_entries_and_dead_letters_bad_ones(server: Server) -> None:
    client = redis.Redis.from_url(server.url)
    stream = "reader:events:0"
    good = [f'{{"event_id":"e{k}","user_id":"u1","type":"view","ts":{1000 + k}}}' for k in range(5)]
    ids = [client.xadd(stream, {"e": line}) for line in good[:3]]
    ids.append(client.xadd(stream, {"e": b"{not json"}))
    ids.append(client.xadd(stream, {"other": b"x"}))  # not written by publish
    ids.append(client.xadd(stream, {"e": good[3]}))
    reader = StreamReader(client, stream, "g", "c1")
    reader.ensure_group()
    # the first two entries were applied by an earlier commit
    batch = reader.read(100, entry_offset(ids[1]), 0)
    assert batch is not None
    assert batch.ids == ids and batch.skipped == 2
    assert [e.event_id for e in batch.events] == ["e2", "e3"]
    assert batch.offset == entry_offset(ids[-1])
    assert batch.dead_letter_ids == [i.decode() for i in ids[3:5]]
    assert [d.offset for d in batch.dead_letters] == [entry_offset(i) for i in ids[3:5]]
    assert "not valid JSON" in batch.dead_letters[0].reason
    assert "no 'e' field" in batch.dead_letters[1].reason
    # everything committed: nothing to apply, every id still to acknowledge
    reader.reset()
    again = reader.read(100, entry_offset(ids[-1]), 0)
    assert again is not None and again.skipped == len(ids) and again.events == []
    assert again.offset == 0
    client.delete(stream)
    client.close()

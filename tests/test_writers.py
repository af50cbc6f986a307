"""One writer per store, and a worker that owns several partitions resumes to the same state:
real processes, a real redis-server, kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from children import popen
from redis_server import RedisServer, running
from test_redis_worker import (
    CONFIG,
    TIMEOUT,
    _comparable,
    _dead_letter_stream,
    _dump,
    _seq,
    _wait,
)

from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.errors import StoreLocked
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import publish
from liveprofile.store.lock import writer_lock
from liveprofile.store.scoped import ScopedStore


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running(tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(path, SyntheticConfig(users=60, days=5, seed=7), invalid_rate=0.02)
    return path


def _cli(*args: str, stderr: Path) -> subprocess.Popen[bytes]:
    with open(stderr, "ab") as err:
        return popen(
            [sys.executable, "-m", "liveprofile.cli", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def test_two_replays_into_one_sqlite_store(events: Path, tmp_path: Path) -> None:
    store = tmp_path / "p.db"
    log = tmp_path / "err.log"
    with open(log, "ab") as err:  # the first writer reads stdin: it runs until stdin closes
        first = popen(
            [sys.executable, "-m", "liveprofile.cli", "replay", "-", "--store", str(store),
             "--no-progress"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    assert first.stdin is not None
    lock = tmp_path / "p.db.writer.lock"
    _wait("the first writer's lock", lambda: lock.exists() and lock.read_text() != "")
    second = subprocess.run(
        [sys.executable, "-m", "liveprofile.cli", "replay", str(events), "--store", str(store),
         "--no-progress"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    first.stdin.write(events.read_bytes())
    first.stdin.close()
    assert first.wait(timeout=TIMEOUT * 2) == 0, log.read_text()
    assert second.returncode == StoreLocked.exit_code, second.stderr
    assert "is being written by another process" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    # once the first is done, the store takes a writer again (and has nothing left to do)
    again = subprocess.run(
        [sys.executable, "-m", "liveprofile.cli", "replay", str(events), "--store", str(store),
         "--no-progress", "--report", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert '"events": 0' in (tmp_path / "r.json").read_text()


def test_redis_lease_refuses_a_second_writer(server: RedisServer) -> None:
    store = RedisStore(server.url, prefix="lease")
    lock = writer_lock(store, "w1", lease_s=1.0)
    try:
        with pytest.raises(StoreLocked, match="second writer"):
            writer_lock(store, "w2", lease_s=1.0)
        # another scope of the prefix is another store
        writer_lock(ScopedStore(store, "other"), "w2", lease_s=1.0).release()
        time.sleep(1.5)  # renewed meanwhile: still held
        assert not lock.lost
        with pytest.raises(StoreLocked):
            writer_lock(store, "w2", lease_s=1.0)
        # a restarted worker with the same consumer name takes its stale lease over
        again = writer_lock(store, "w1", lease_s=1.0)
        _wait("the old holder to notice", lambda: lock.lost, timeout=5)
        again.release()
    finally:
        lock.release()
    writer_lock(store, "w2", lease_s=1.0).release()


def test_second_worker_on_one_prefix_is_refused(
    server: RedisServer, events: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG)
    client = redis.Redis.from_url(server.url)
    with open(events, "rb") as fh:
        publish(client, "two", 1, fh)
    client.set("two:writer", "w1 elsewhere:1 x", px=20_000)  # a live worker holds the lease
    client.close()
    args = ["worker", "--redis", server.url, "--prefix", "two", "--partitions", "0", "--of", "1",
            "--consumer", "w2", "--config", str(config), "--idle-exit", "2"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "liveprofile.cli", *args],
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == StoreLocked.exit_code, result.stderr
    assert "second writer" in result.stderr and "'w1 elsewhere:1 x'" in result.stderr
    assert _seq(server.url, "two") == 0  # nothing committed


def _worker(url: str, prefix: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    args = ["worker", "--redis", url, "--prefix", prefix, "--partitions", "0,1,2", "--of", "3",
            "--consumer", "w1", "--config", str(config), "--block-ms", "100", "--idle-exit", "4",
            "--batch-size", "15"]  # fmt: skip
    return _cli(*args, stderr=log)


def test_killed_multi_partition_worker_resumes_to_the_same_state(
    server: RedisServer, events: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG)
    client = redis.Redis.from_url(server.url)
    for prefix in ("mclean", "mkilled"):
        with open(events, "rb") as fh:
            publish(client, prefix, 3, fh)
    client.close()
    log = tmp_path / "worker.log"
    assert _worker(server.url, "mclean", config, log).wait(timeout=TIMEOUT * 2) == 0
    clean = _comparable(_dump(server.url, "mclean"))
    rng = random.Random(12)
    kills = 0
    for _ in range(4):
        before = _seq(server.url, "mkilled")
        proc = _worker(server.url, "mkilled", config, log)
        target = before + rng.randint(2, 6)
        done = lambda p=proc, t=target: p.poll() is not None or _seq(server.url, "mkilled") >= t  # noqa: E731
        _wait("a commit", done)
        time.sleep(rng.uniform(0.0, 0.02))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=TIMEOUT)
    assert kills >= 3, log.read_text()
    assert _worker(server.url, "mkilled", config, log).wait(timeout=TIMEOUT * 2) == 0
    assert _comparable(_dump(server.url, "mkilled")) == clean
    logged = sorted(_dead_letter_stream(server.url, "mkilled"))
    assert logged == sorted(_dead_letter_stream(server.url, "mclean")) and logged

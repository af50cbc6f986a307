"""``liveprofile status`` of a prefix shared by scoped Redis Streams workers: per stream its
committing scope, committed entry and store lag, and per worker its lease (live or not), its
streams and counters, against a real Redis and real workers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.learn.stored import shared_learned
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.redis.ops import Status, stream_status
from liveprofile.redis.streams import publish, stream_key
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.redis.workers import worker_statuses

CONFIG = PipelineConfig.from_toml("[run]\nbatch_size = 200\n[features]\nbits = 14\n")
PREFIX = "scoped-status"
TIMEOUT = 60.0


def _worker(url: str, partition: int, stop: threading.Event | None = None) -> None:
    store = FencedRedisStore(url, prefix=PREFIX)
    client = redis.Redis.from_url(url)
    options = WorkerOptions(
        PREFIX, [partition], consumer=f"w{partition}", batch_size=10, block_ms=50,
        scope=f"p{partition}",
    )  # fmt: skip
    try:
        RedisWorker(CONFIG, store, client, options).run(max_idle_polls=3, stop=stop)
    finally:
        store.close()
        client.close()


def _status(url: str) -> Status:
    client = redis.Redis.from_url(url)
    store = FencedRedisStore(url, prefix=PREFIX)
    try:
        return stream_status(client, store, PREFIX, sample_seconds=0)
    finally:
        store.close()
        client.close()


def _after(url: str, stream: str, entry: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return len(client.xrange(stream, min=f"({entry}", max="+"))
    finally:
        client.close()


def test_status_shows_each_scope_its_streams_lag_and_lease(
    server: RedisServer, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=40, days=4, seed=5), invalid_rate=0.02)
    client = redis.Redis.from_url(server.url)
    with open(events, "rb") as fh:
        lengths = publish(client, PREFIX, 2, fh).per_partition
    client.close()
    _worker(server.url, 1)  # ran to the end, and stopped

    stop = threading.Event()
    running = threading.Thread(target=_worker, args=(server.url, 0, stop))
    running.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not any(w.scope == "p0" and w.commits >= 2 for w in _status(server.url).workers):
            assert time.monotonic() < deadline and running.is_alive()
            time.sleep(0.01)
        live = {w.scope: w for w in _status(server.url).workers}
    finally:
        stop.set()
        running.join(TIMEOUT)
    assert live["p0"].live and live["p0"].consumer == "w0"
    assert live["p0"].process == f"{socket.gethostname()}:{os.getpid()}"
    assert live["p0"].lease_expires_ms is not None and live["p0"].lease_expires_ms > 0
    assert not live["p1"].live and live["p1"].consumer is None

    status = _status(server.url)
    streams = {s.partition: s for s in status.streams}
    assert [s.owner for s in status.streams] == ["p0", "p1"]
    assert streams[1].store_lag == 0 and streams[1].committed_id == streams[1].last_entry_id
    committed = streams[0].committed_id
    assert committed is not None
    # stopped mid-stream: the store lag is what is left after the committed entry
    assert streams[0].store_lag == _after(server.url, stream_key(PREFIX, 0), committed) > 0
    workers = {w.scope: w for w in status.workers}
    assert workers.keys() == {"p0", "p1"} and not any(w.live for w in workers.values())
    assert workers["p0"].streams == [stream_key(PREFIX, 0)]
    assert sum(w.events + w.dead_letters + w.duplicates for w in workers.values()) < sum(
        lengths.values()
    )
    assert status.store.events == sum(w.events for w in workers.values()) > 0
    store = FencedRedisStore(server.url, prefix=PREFIX)
    learned = shared_learned(store, "convert")
    assert status.tasks["convert"]["shared_model_learned"] == learned
    assert status.tasks["convert"]["n"] == learned > 0  # each example learned once
    # only the scopes asked for
    client = redis.Redis.from_url(server.url)
    assert [w.scope for w in worker_statuses(client, store, ["p1"])] == ["p1"]
    client.close()
    store.close()

    # the command prints the same as JSON, and as tables naming the scopes
    cli = [sys.executable, "-m", "liveprofile.cli", "status", "--redis", server.url]
    cli += ["--prefix", PREFIX, "--sample-seconds", "0"]
    shown = json.loads(subprocess.run([*cli, "--json"], capture_output=True, check=True).stdout)
    assert [s["store_lag"] for s in shown["streams"]] == [streams[0].store_lag, 0]
    assert [w["scope"] for w in shown["workers"]] == ["p0", "p1"]
    table = subprocess.run(
        cli, capture_output=True, check=True, env={**os.environ, "COLUMNS": "200"}
    )
    text = table.stdout.decode()
    assert "store lag" in text and "workers" in text and "shared model learned" in text

"""The Kafka worker's per-batch trace (``liveprofile.kafka.trace``) and its batch windows,
against a real broker and a real Redis server."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import kafka_helpers as kh
import pytest
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.engine.core import Core
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.status import _checkpoint
from liveprofile.kafka.trace import PHASES, TRACE_ENV, BatchTrace, trace_path
from liveprofile.kafka.worker import KafkaWorker, poll_wait
from liveprofile.redis.fence import FencedRedisStore

CONFIG = '[run]\nbatch_size = 40\nmax_batch_delay = "50ms"\n[features]\nbits = 14'


def test_a_traced_worker_writes_one_line_per_batch_and_restores_the_step(
    broker: Broker, server: RedisServer, lines: list[bytes], tmp_path: Path
) -> None:
    topic = "traced"
    config = PipelineConfig.from_toml(CONFIG)
    kh.publish(broker.bootstrap, topic, lines)
    path = tmp_path / "trace.jsonl"
    step = Core.__dict__["step"]
    store = FencedRedisStore(server.url, prefix=topic)
    worker = KafkaWorker(config, store, broker.bootstrap, topic, topic, batch_size=40, trace=path)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    try:
        kh.wait("the topic to be committed", kh.caught_up(broker, server.url, topic))
    finally:
        stop.set()
        thread.join(kh.TIMEOUT)
        store.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    # every record the worker committed is in exactly one traced batch, within the size limit
    assert sum(r["n"] for r in rows) == kh.committed(server.url, topic, topic) > len(lines) // 2
    assert all(0 < r["n"] <= 40 for r in rows)
    assert {r["p"] for r in rows} == set(range(kh.PARTITIONS))
    for r in rows:
        assert {"step", "commit", "payload"} <= r["phases"].keys()
        assert r["apply_ms"] >= r["phases"]["step"] >= 0 and r["cpu_ms"] >= 0
        assert r["oldest_ms"] >= r["newest_ms"] and r["gc_gen"] in (-1, 0, 1, 2)
    assert Core.__dict__["step"] is step  # the wrapped methods are put back on close
    # each partition's event-time watermark after each batch: never back, and the last one is
    # the partition's committed checkpoint's
    reader = FencedRedisStore(server.url, prefix=topic)
    for p in range(kh.PARTITIONS):
        mine = [r for r in rows if r["p"] == p]
        marks = [r["wm"] for r in mine]
        ckpt = _checkpoint(reader, topic, p)
        assert ckpt is not None and marks == sorted(marks)
        assert marks[-1] == round(ckpt.watermark, 3)
        # batches follow one another from offset 0 to the committed offset
        assert [r["end"] - r["n"] for r in mine] == [0] + [r["end"] for r in mine[:-1]]
        assert mine[-1]["end"] == ckpt.offsets[f"kafka:{topic}:{p}"]
    reader.close()


def test_trace_is_off_unless_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(TRACE_ENV, raising=False)
    assert trace_path() is None
    config = PipelineConfig.from_toml(CONFIG)
    store = FencedRedisStore("redis://127.0.0.1:6379/0", prefix="trace-off")
    try:
        assert KafkaWorker(config, store, "127.0.0.1:1", "t", "g").trace_file is None
        monkeypatch.setenv(TRACE_ENV, str(tmp_path / "t.jsonl"))
        assert KafkaWorker(config, store, "127.0.0.1:1", "t", "g").trace_file == (
            tmp_path / "t.jsonl"
        )
    finally:
        store.close()


def test_the_trace_counts_collections_and_phases_per_batch(tmp_path: Path) -> None:
    import gc

    path = tmp_path / "trace.jsonl"
    trace = BatchTrace(path, phases=[p for p in PHASES if p[0] == "step"])
    enabled = gc.isenabled()
    gc.disable()  # only the collection below
    try:
        gc.collect(1)
        trace.polled(1.0, 1.5)
        trace.applied(0, 10, 1.5, 2.0, 0.25, (100.0, 101.0), now=102.0)
        trace.polled(2.0, 2.0)
        trace.applied(0, 5, 2.0, 2.5, 0.25, (101.0, 101.5), now=102.5)
        trace.applied(0, 5, 2.5, 3.0, 0.25, (0.0, 0.0), now=103.0)  # no broker timestamps
    finally:
        trace.close()
        if enabled:
            gc.enable()
    first, second, third = (json.loads(x) for x in path.read_text().splitlines())
    assert first["gc_gen"] == 1 and first["gc_ms"] >= 0
    assert second["gc_gen"] == -1 and second["gc_ms"] == 0  # counted per batch
    assert (first["poll_ms"], first["gap_ms"], second["gap_ms"]) == (500.0, 0.0, 0.0)
    assert (first["oldest_ms"], first["newest_ms"]) == (2000.0, 1000.0)
    assert (third["oldest_ms"], third["newest_ms"]) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("opened", "now", "wait"),
    [
        (10.0, 10.0, 0.2),  # the last poll just returned: a whole delay
        (10.0, 10.15, 0.05),  # applying its batch took 150 ms: 50 ms more
        (10.0, 10.5, 0.0),  # applying took longer than the delay: what has arrived, at once
    ],
)
def test_a_batch_closes_one_delay_after_the_last_poll(
    opened: float, now: float, wait: float
) -> None:
    assert poll_wait(opened, 0.2, now) == pytest.approx(wait)

"""Commits sent in the background while the next batch is read (``FencedRedisStore.overlap``,
on in the Kafka worker): they land in order, reads see them (those that do not wait for them
see what they write), a failed one is reported with its partition, the offsets reported to
Kafka wait for them, and a worker killed with commits in flight resumes exactly once.

A commit is held in flight with ``CLIENT PAUSE ... WRITE`` on a Redis of the module's own: its
``EXEC`` waits while reads go on."""

from __future__ import annotations

import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kafka_helpers as kh
import msgspec
import pytest
import redis
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.local import RunStats
from liveprofile.events.schema import EventParser
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import apply_records, load_partition, partition_scope, source_name
from liveprofile.kafka.producer import KafkaPublisher
from liveprofile.kafka.worker import KafkaWorker, consumer_config
from liveprofile.redis.fence import CommitFailed, FencedRedisStore
from liveprofile.store.layout import check_config, read_checkpoint
from liveprofile.store.scoped import ScopedStore


def stored_offset(url: str, topic: str) -> int:
    """Partition 0's next offset in the store (-1: none yet)."""
    store = FencedRedisStore(url, prefix=topic)
    try:
        ckpt = read_checkpoint(ScopedStore(store, partition_scope(topic, 0)))
    finally:
        store.close()
    return ckpt.offsets.get(source_name(topic, 0), -1)


def _snapshot(url: str, prefix: str) -> dict[bytes, Any]:
    client = redis.Redis.from_url(url)
    try:
        return kh.raw_snapshot(client, prefix)
    finally:
        client.close()


class _Watched(FencedRedisStore):
    """A store that notes which of its uses waited for a commit still in flight."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix=prefix)
        self.waits: list[str] = []
        self._use = "a read"

    def commit(self, rows: Any, meta: Any) -> None:
        self._use = "the commit"
        try:
            super().commit(rows, meta)
        finally:
            self._use = "a read"

    def settle(self) -> None:
        if self._pending is not None and not self._pending[1].done():
            self.waits.append(self._use)
        super().settle()


def _hold(store: _Watched) -> threading.Event:
    """Hold the next commit ``store`` sends in the background until the returned event."""
    gate = threading.Event()
    assert store._sender is not None
    store._sender.submit(gate.wait)
    return gate


def _release_when_waited(store: _Watched, gate: threading.Event) -> None:
    kh.wait("a use of the store to wait", lambda: store._pending is None)
    gate.set()


def _apply(url: str, lines: list[bytes], mode: str) -> dict[bytes, Any]:
    """The store after applying ``lines`` in batches of 300 (shared model: merges too), each
    commit made before the next batch (``foreground``), sent in the background
    (``overlap``), or sent in the background and ``held`` until the next batch's own commit
    waits for it (so that batch reads everything beside it)."""
    prefix = f"ov-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig()
    store = _Watched(url, prefix)
    try:
        check_config(store, config)
        store.overlap = mode != "foreground"
        if mode == "held":
            store._sender = ThreadPoolExecutor(1)
        owned, _ = load_partition(store, config, "t", 0, {})
        stats = RunStats()
        gate: threading.Event | None = None
        for start in range(0, len(lines), 300):
            records = [(o, lines[o]) for o in range(start, min(start + 300, len(lines)))]
            if mode != "held":
                apply_records(store, "t", owned, records, stats, EventParser())
                continue
            release = None
            if gate is not None:  # the previous batch's commit, held until this one waits
                release = threading.Thread(target=_release_when_waited, args=(store, gate))
                release.start()
            gate = _hold(store)  # this batch's commit, held the same way
            apply_records(store, "t", owned, records, stats, EventParser())
            if release is not None:
                release.join()
        waits = list(store.waits)
        if gate is not None:
            gate.set()
        store.settle()
        assert stats.batches > 3 and stats.dead_letters == 1
        if mode == "held":  # every read of a batch went on beside the commit in flight
            assert waits == ["the commit"] * (stats.batches - 1)
        return _snapshot(url, prefix)
    finally:
        store.drop()
        store.close()


def test_an_overlapped_run_commits_the_store_a_foreground_run_commits(
    server: RedisServer,
) -> None:
    raw = list(generate(SyntheticConfig(users=80, items=60, days=3, seed=5)))
    lines = [msgspec.json.encode(e) for e in raw]
    lines[100] = b'{"event_id": "bad", "type": "view"}'
    foreground = _apply(server.url, lines, "foreground")
    assert any(b"profile" in key for key in foreground)
    assert _apply(server.url, lines, "overlap") == foreground
    assert _apply(server.url, lines, "held") == foreground


def test_a_worker_killed_with_commits_in_flight_resumes_exactly_once(
    broker: Broker, server: RedisServer, lines: list[bytes], tmp_path: Path
) -> None:
    """Killed four times mid-stream (batches of 10: a commit is in flight most of the time),
    the workers leave the store an undisturbed run without overlap leaves."""
    config = tmp_path / "pipeline.toml"
    config.write_text(kh.CONFIG)
    topic = "overlapped"
    kh.publish(broker.bootstrap, topic, lines)
    log = tmp_path / "worker.log"
    for _ in range(4):
        proc = kh.worker(broker, server.url, topic, config, log, "w1")
        done = kh.committed(server.url, topic, topic)
        kh.wait("commits", lambda d=done: kh.committed(server.url, topic, topic) > d + 30)
        kh.stop(proc, log, signal.SIGKILL)
        assert kh.committed(server.url, topic, topic) < len(lines)  # killed mid-stream
    proc = kh.worker(broker, server.url, topic, config, log, "w1")
    kh.wait("the worker to catch up", kh.caught_up(broker, server.url, topic))
    kh.stop(proc, log)
    kh.assert_equal(kh.snapshot(server.url, topic, topic), kh.reference(broker, server.url, topic))


def test_a_worker_drops_the_partition_whose_background_commit_failed(
    server: RedisServer, tmp_path: Path
) -> None:
    """Another owner committed partition 1 first: the worker's commit of it, sent in the
    background, fails; the worker drops that partition (to reload it from the store) and
    keeps the others. A commit Redis never got (it was down) is waited out the same way; a
    commit that failed for another reason is raised."""
    prefix = f"ov-{uuid.uuid4().hex[:6]}"
    config = PipelineConfig.from_toml(kh.CONFIG)
    store = FencedRedisStore(server.url, prefix=prefix)
    other = FencedRedisStore(server.url, prefix=prefix)
    try:
        check_config(store, config)
        worker = KafkaWorker(config, store, "127.0.0.1:1", "t", "g")
        for p in (0, 1):
            worker.owned[p], _ = load_partition(store, config, "t", p, worker.models)
        rival, _ = load_partition(other, config, "t", 1, {})
        line = b'{"event_id": "e1", "user_id": "u1", "type": "view", "ts": 1700000000}'
        apply_records(other, "t", rival, [(0, line)], RunStats(), EventParser())
        store.overlap = True
        apply_records(store, "t", worker.owned[1], [(0, line)], RunStats(), EventParser())
        worker._settle()
        assert sorted(worker.owned) == [0]
        assert store.fence_value("t.1") == 1  # the rival's commit, not the worker's
        own = RedisServer(tmp_path, appendonly=False)
        own.start()
        failing = FencedRedisStore(own.url, prefix=prefix)
        failing.overlap = True
        worker.store = failing
        assert failing.fence_value("t.0") == 0  # connected
        own.stop(signal.SIGKILL)
        failing.fence = ("t.0", 0)
        failing.commit({"profile": {"u1": b"x"}}, {})
        failing.fence = None
        worker._settle()  # Redis cannot be reached: waited out, the partition reloaded after
        assert sorted(worker.owned) == [] and worker.dropped == {0, 1}
        failing.close()
        worker.store = store
        worker.owned[0], _ = load_partition(store, config, "t", 0, worker.models)
        store.client.set(store.fence_key("t.0"), b"not a sequence")
        store.fence = ("t.0", 0)
        store.commit({"profile": {"u1": b"x"}}, {})
        store.fence = None
        with pytest.raises(CommitFailed) as failed:
            worker._settle()
        assert not failed.value.fenced_out and sorted(worker.owned) == []
    finally:
        store.drop()
        store.close()
        other.close()


def test_offsets_reach_kafka_only_once_their_commit_has_landed(
    broker: Broker, server: RedisServer
) -> None:
    """Kafka's committed offsets (monitoring) are never ahead of the store's: while a batch's
    commit is in flight, its partition reports the offset before that batch."""
    from confluent_kafka import Consumer, TopicPartition

    topic = f"reported-{uuid.uuid4().hex[:6]}"
    events = list(generate(SyntheticConfig(users=20, items=40, days=3, seed=3)))[:40]
    KafkaPublisher(broker.bootstrap, topic, partitions=1).extend(map(msgspec.json.encode, events))
    config = PipelineConfig.from_toml(kh.CONFIG)
    store = FencedRedisStore(server.url, prefix=topic)
    worker = KafkaWorker(config, store, broker.bootstrap, topic, topic)
    consumer = Consumer(consumer_config(broker.bootstrap, topic))
    worker._consumer = consumer
    gate = threading.Event()
    try:
        check_config(store, config)
        store.overlap = True
        store._sender = ThreadPoolExecutor(1)
        consumer.assign([TopicPartition(topic, 0, 0)])
        worker._load(0)
        messages: list[Any] = []

        def fetched() -> bool:
            messages.extend(m for m in consumer.consume(40, 0.2) if m.error() is None)
            return len(messages) == 40

        kh.wait("the records", fetched)

        def reported() -> int:
            return int(consumer.committed([TopicPartition(topic, 0)], timeout=10)[0].offset)

        def applied(batch: list[Any]) -> None:
            worker._apply(worker.owned[0], batch, RunStats())
            worker._report_offsets([0])

        applied(messages[:20])
        store.settle()
        worker._report_offsets(())
        kh.wait("the first offset", lambda: reported() == 20)
        gate = _hold(store)  # the next commit stays in flight (until the gate opens)
        applied(messages[20:])
        assert store.in_flight() == f"{topic}.0"
        assert reported() == 20 == stored_offset(server.url, topic)
        gate.set()
        store.settle()
        assert stored_offset(server.url, topic) == 40
        worker._report_offsets(())  # as the loop does at its next turn
        kh.wait("the held offset", lambda: reported() == 40)
    finally:
        gate.set()
        consumer.close()
        worker._consumer = None
        store.drop()
        store.close()

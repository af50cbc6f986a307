"""Event-time alignment (``kafka.align.SkewGate``) on a real broker: the floor of the other
workers' partitions is right, and their end offsets are not asked of the broker at every look.

A worker that owns some of a topic's partitions learns the others' watermarks and committed
offsets from the store (here a function over a dict, as the store would answer) and their end
offsets from Kafka. Two workers used to ask the broker for every other partition's end offset
every 50 ms, which is where they spent most of their time.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
from confluent_kafka import Consumer, Producer, TopicPartition
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import RunStats
from liveprofile.errors import InvalidEvent
from liveprofile.events.schema import EventParser
from liveprofile.kafka.align import SkewGate
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import (
    apply_records,
    load_partition,
    partition_scope,
    source_name,
)
from liveprofile.kafka.producer import KafkaPublisher, producer_config
from liveprofile.kafka.worker import KafkaWorker, consumer_config
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import check_config, read_checkpoint
from liveprofile.store.scoped import ScopedStore

PARTITIONS = 3
DAY = 86400.0


def _ends(broker: Broker, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-ends"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def test_floor_of_other_partitions_reads_their_ends_seldom(
    broker: Broker, lines: list[bytes]
) -> None:
    topic = "aligned"
    KafkaPublisher(broker.bootstrap, topic, partitions=PARTITIONS, validate=False).extend(lines)
    ends = _ends(broker, topic)
    assert all(end > 0 for end in ends.values())
    # the other worker's partitions 1 and 2 as the store has them: (watermark, next offset)
    committed = {1: (100.0, 0), 2: (50.0, ends[2] - 1)}
    now = [0.0]
    gate = SkewGate(committed.__getitem__, topic, 10.0, interval=0.05, clock=lambda: now[0])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        own = {0: (500.0, 0)}  # this worker's partition 0, events left
        assert gate.floor(consumer, own) == 50.0  # the slowest with events left
        assert gate.end_reads == 1
        for _ in range(50):  # a look every 100 ms: the ends are not read again
            now[0] += 0.1
            assert gate.floor(consumer, own) == 50.0
        assert gate.end_reads == 1
        committed[2] = (80.0, ends[2])  # partition 2 applied: does it have events left?
        now[0] += 0.1
        assert gate.floor(consumer, own) == 100.0  # no: partition 1 is now the slowest
        assert gate.end_reads == 2
        committed[1] = (120.0, ends[1])
        for _ in range(5):  # both look finished: read again, but at most once a second
            now[0] += 0.1
            assert gate.floor(consumer, own) == 500.0
        assert gate.end_reads == 2
        now[0] += 1.0
        assert gate.floor(consumer, own) == 500.0
        assert gate.end_reads == 3
        # partition 0 handed over, all applied: the others are read again at once (the
        # owned partitions changed), and nothing is left anywhere
        committed[0] = (500.0, ends[0])
        assert gate.floor(consumer, {}) == math.inf
    finally:
        consumer.close()


def test_a_batch_in_flight_counts_for_the_other_workers(
    broker: Broker, server: RedisServer, lines: list[bytes]
) -> None:
    """A worker announces the latest event time of the batch it is about to apply; the other
    workers' gate sees the partition there, not at its last commit, so they need not wait for
    the commit (replaying history, workers used to take turns batch by batch), but no further
    than ``run.model_staleness`` past that commit (a batch misses what the batches in flight
    learn: bounded in event time)."""
    topic = "inflight"
    KafkaPublisher(broker.bootstrap, topic, partitions=2, validate=False).extend(lines)
    cfg = PipelineConfig.from_toml('[run]\npartition_skew = "1h"\n[features]\nbits = 14\n')
    store = FencedRedisStore(server.url, prefix=topic)
    store.drop()
    check_config(store, cfg)
    other = KafkaWorker(cfg, store, broker.bootstrap, topic, topic)  # partition 1's owner
    this = KafkaWorker(cfg, store, broker.bootstrap, topic, topic)  # owns partition 0
    owned, _ = load_partition(store, cfg, topic, 1, {})
    records = [(o, line) for o, line in enumerate(lines[:40])]
    latest = max(EventParser().parse_json(v).ts for _, v in records if _valid(v))
    seen: list[tuple[float, tuple[float, int]]] = []

    def started(ts: float) -> None:  # the announcement, then what partition 0's owner sees
        store.announce(partition_scope(topic, 1), ts)
        seen.append((ts, this._committed(1)))

    assert this._committed(1) == (-math.inf, -1)
    apply_records(store, topic, owned, records, RunStats(), EventParser(), None, started)
    # in flight, nothing committed: no further than the staleness past no commit at all
    assert seen == [(latest, (-math.inf, -1))]
    assert this._committed(1) == (latest, 40)  # committed
    # fetched batches go partition furthest behind in event time first, then by partition
    fresh, _ = load_partition(store, cfg, topic, 0, {})
    this.owned = {0: fresh, 1: owned}
    assert fresh.state.watermark < owned.state.watermark
    order = this._behind_first({2: ["c"], 1: ["b"], 0: ["a"]})  # 2: not (or no longer) owned
    assert [p for p, _ in order] == [0, 1, 2]
    this.owned = {}
    unbounded = KafkaWorker(
        msgspec.structs.replace(cfg, run=msgspec.structs.replace(cfg.run, model_staleness="")),
        store,
        broker.bootstrap,
        topic,
        topic,
    )
    assert this.gate is not None and other.gate is not None and unbounded.gate is not None
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        own = {0: (latest + 5 * DAY, 0)}
        this.gate.interval = 0.0  # every look reads the store
        store.announce(partition_scope(topic, 1), latest + 7200)  # its next batch, in flight
        assert this.gate.floor(consumer, own) == latest + 7200
        store.announce(partition_scope(topic, 1), latest + 3 * DAY)  # a batch of three days
        assert this.gate.floor(consumer, own) == latest + DAY / 2  # run.model_staleness
        assert unbounded.gate.floor(consumer, own) == latest + 3 * DAY
    finally:
        consumer.close()
        store.drop()
        store.close()


def _valid(line: bytes) -> bool:
    try:
        EventParser().parse_json(line)
    except InvalidEvent:
        return False
    return True


def _fetch(consumer: Consumer, n: int) -> list[Any]:
    """The next ``n`` records (fewer if the partitions have no more after a few empty polls)."""
    out: list[Any] = []
    empty = 0
    while len(out) < n and empty < 20:
        got = [m for m in consumer.consume(n - len(out), 0.5) if m.error() is None]
        empty = 0 if got else empty + 1
        out.extend(got)
    return out


def test_a_partition_ahead_is_held_and_paused_only_when_many_batches_wait(
    broker: Broker, lines: list[bytes]
) -> None:
    """The records of a partition too far ahead are kept in memory, batch by batch, and the
    partition keeps being fetched; only past ``max_held`` batches is it paused. As the others
    catch up, one held batch is released at a time, in order, and the partition resumes."""
    topic = "held"
    KafkaPublisher(broker.bootstrap, topic, partitions=2, validate=False).extend(lines)
    committed = {1: (0.0, 0)}  # the other worker's partition 1: far behind, events left
    gate = SkewGate(committed.__getitem__, topic, 10.0, interval=0.0, max_held=4)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        batches = [_fetch(consumer, 10) for _ in range(5)]
        own = {0: (1000.0, 0)}
        for batch in batches[:4]:
            gate.hold(consumer, 0, batch)
        assert gate.paused == set() and len(gate.held[0]) == 4
        assert len(_fetch(consumer, 10)) == 10  # still fetched: held, not paused
        gate.hold(consumer, 0, batches[4])
        assert gate.paused == {0} and gate.pauses == 1
        assert consumer.consume(10, 1.0) == []  # paused
        assert gate.ready(consumer, own) == []  # still too far ahead
        committed[1] = (995.0, 0)
        released = [gate.ready(consumer, own) for _ in range(3)]
        assert [[p for p, _ in r] for r in released] == [[0], [0], [0]]  # a batch at a time
        assert [b for r in released for _, b in r] == batches[:3]
        assert gate.paused == set() and len(gate.held[0]) == 2  # resumed
        resumed = _fetch(consumer, 10)
        assert [m.offset() for m in resumed] == list(range(60, 70))  # after what it holds
        while gate.held:
            (p, batch), *rest = gate.ready(consumer, own)
            assert p == 0 and rest == [] and batch in batches[3:]
        assert gate.pauses == 1
    finally:
        consumer.close()


def test_a_paused_partition_revoked_and_assigned_again_is_fetched(
    broker: Broker, server: RedisServer, lines: list[bytes]
) -> None:
    """The client keeps a partition's pause across a revoke and a new assignment: the worker
    resumes the partitions it gives up, or one assigned back to it would never be read."""
    topic = "held-revoked"
    KafkaPublisher(broker.bootstrap, topic, partitions=2, validate=False).extend(lines)
    cfg = PipelineConfig.from_toml('[run]\npartition_skew = "1h"\n[features]\nbits = 14\n')
    store = FencedRedisStore(server.url, prefix=topic)
    store.drop()
    check_config(store, cfg)
    worker = KafkaWorker(cfg, store, broker.bootstrap, topic, topic)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic})
    worker._consumer = consumer
    assert worker.gate is not None
    tp = [TopicPartition(topic, 0)]
    try:
        worker._on_assign(consumer, tp)
        for _ in range(worker.gate.max_held + 1):
            worker.gate.hold(consumer, 0, _fetch(consumer, 10))
        assert worker.gate.paused == {0}
        worker._on_revoke(consumer, tp)
        assert worker.gate.paused == set() and worker.gate.held == {}
        worker._on_assign(consumer, tp)
        assert [m.offset() for m in _fetch(consumer, 10)] == list(range(10))
    finally:
        consumer.close()
        store.drop()
        store.close()


def test_held_records_are_dropped_with_a_partition_whose_commit_failed(
    broker: Broker, server: RedisServer, lines: list[bytes]
) -> None:
    """A commit of partition 0 fails (another owner committed it first), so the worker reads
    the partition again from the store's offset: the batches it held for the partition are
    dropped, not applied after that seek, and every record is applied exactly once."""
    topic = "held-failed"
    KafkaPublisher(broker.bootstrap, topic, partitions=2, validate=False).extend(lines)
    ends = _ends(broker, topic, 2)
    cfg = PipelineConfig.from_toml('[run]\npartition_skew = "1000d"\n[features]\nbits = 14\n')
    store = FencedRedisStore(server.url, prefix=topic)
    store.drop()
    check_config(store, cfg)
    worker = KafkaWorker(cfg, store, broker.bootstrap, topic, topic, batch_size=20, overlap=False)
    consumer = Consumer(consumer_config(broker.bootstrap, topic))
    worker._consumer = consumer
    worker._producer = Producer(producer_config(broker.bootstrap))  # for the dead letters
    gate = worker.gate
    assert gate is not None
    try:
        worker._on_assign(consumer, [TopicPartition(topic, p) for p in ends])
        fetched: dict[int, list[Any]] = {p: [] for p in ends}
        for m in _fetch(consumer, sum(ends.values())):
            fetched[m.partition()].append(m)
        assert {p: len(ms) for p, ms in fetched.items()} == ends
        consumer.seek(TopicPartition(topic, 1, 20))  # read again by the loop below
        worker._apply(worker.owned[0], fetched[0][:20], RunStats())
        worker._apply(worker.owned[1], fetched[1][:20], RunStats())
        held = [fetched[0][20:40], fetched[0][40:60]]
        for batch in held:
            gate.hold(consumer, 0, batch)
        rival = FencedRedisStore(server.url, prefix=topic)  # another owner: offsets 20-29
        owned, offset = load_partition(rival, cfg, topic, 0, {})
        assert offset == 20
        records = [(m.offset(), m.value()) for m in held[0][:10]]
        apply_records(rival, topic, owned, records, RunStats(), EventParser())
        rival.close()
        assert gate.ready(consumer, worker._positions()) == [(0, held[0])]
        worker._apply(worker.owned[0], held[0], RunStats())  # fenced out: dropped
        assert 0 not in worker.owned and worker.dropped == {0} and gate.held == {}
        worker._loop(RunStats(), 20, None)  # reads partition 0 again from offset 30
        for p, end in ends.items():
            ckpt = read_checkpoint(ScopedStore(store, partition_scope(topic, p)))
            assert ckpt.offsets[source_name(topic, p)] == end
            assert ckpt.events + ckpt.duplicates + ckpt.dead_letters == end, p
    finally:
        consumer.close()
        store.drop()
        store.close()

"""Event-time alignment (``kafka.align.SkewGate``) on a real broker: the floor of the other
workers' partitions is right, and their end offsets are not asked of the broker at every look.

A worker that owns some of a topic's partitions learns the others' watermarks and committed
offsets from the store (here a function over a dict, as the store would answer) and their end
offsets from Kafka. Two workers used to ask the broker for every other partition's end offset
every 50 ms, which is where they spent most of their time.
"""

from __future__ import annotations

import math

from confluent_kafka import Consumer, TopicPartition
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import RunStats
from liveprofile.errors import InvalidEvent
from liveprofile.events.schema import EventParser
from liveprofile.kafka.align import SkewGate, announce
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import apply_records, load_partition, partition_scope
from liveprofile.kafka.producer import KafkaPublisher
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import check_config

PARTITIONS = 3


def _ends(broker: Broker, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-ends"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), 30)[1]
            for p in range(PARTITIONS)
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
        assert gate.floor(consumer, {}) == math.inf  # nothing left anywhere
    finally:
        consumer.close()


def test_a_batch_in_flight_counts_for_the_other_workers(
    broker: Broker, server: RedisServer, lines: list[bytes]
) -> None:
    """A worker announces the latest event time of the batch it is about to apply; the other
    workers' gate sees the partition there, not at its last commit, so they need not wait for
    the commit (replaying history, workers used to take turns batch by batch)."""
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
        announce(store, partition_scope(topic, 1), ts)
        seen.append((ts, this._committed(1)))

    assert this._committed(1) == (-math.inf, -1)
    apply_records(store, topic, owned, records, RunStats(), EventParser(), None, started)
    assert seen == [(latest, (latest, -1))]  # in flight: at its latest event, nothing committed
    assert this._committed(1) == (latest, 40)  # committed
    assert this.gate is not None and other.gate is not None
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topic})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        announce(store, partition_scope(topic, 1), latest + 7200)  # its next batch, in flight
        assert this.gate.floor(consumer, {0: (latest + 9000, 0)}) == latest + 7200
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

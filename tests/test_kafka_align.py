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

from liveprofile.kafka.align import SkewGate
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.producer import KafkaPublisher

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

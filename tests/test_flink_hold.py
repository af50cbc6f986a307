"""The Flink job's Python side (``flink.job.ApplyBatches``) against a real Kafka broker and a
real Redis, without Flink: windows of a partition too far ahead in event time are held until
the partitions behind it have caught up (a partition with records left and none applied yet
holds the others back too), and records a restore lost (held windows live in memory only)
are read again from Kafka when the partition's next window comes."""

from __future__ import annotations

import json
from typing import Any

import kafka_helpers as kh
from confluent_kafka import Producer
from kafka_helpers import CONFIG, SHARED_CONFIG
from redis_server import RedisServer

from liveprofile.flink.job import ApplyBatches, FlinkSettings, read_range
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.producer import ensure_topics, producer_config
from liveprofile.kafka.status import _checkpoint
from liveprofile.redis.fence import FencedRedisStore

T0 = 1_704_067_200.0
AHEAD = 6 * 3600.0  # partition 0's events start this far ahead of partition 1's
SKEWED = SHARED_CONFIG.replace("[run]\n", '[run]\npartition_skew = "10m"\n')


def _event(n: str, user: str, ts: float) -> bytes:
    return json.dumps(
        {"event_id": n, "user_id": user, "type": "view", "item_id": "i1", "ts": ts}
    ).encode()


def _windows(records: list[tuple[int, bytes]], size: int) -> list[list[tuple[int, bytes]]]:
    return [records[k : k + size] for k in range(0, len(records), size)]


def _offset(store: FencedRedisStore, topic: str, p: int) -> int:
    ckpt = _checkpoint(store, topic, p)
    return -1 if ckpt is None else ckpt.offsets.get(f"kafka:{topic}:{p}", -1)


def test_a_partition_ahead_waits_for_one_not_started_and_then_for_its_commits(
    broker: Broker, server: RedisServer
) -> None:
    topic = "flink-hold"
    ensure_topics(broker.bootstrap, {topic: 2})
    producer = Producer(producer_config(broker.bootstrap))
    for k in range(300):
        producer.produce(topic, _event(f"a{k}", f"a{k % 30}", T0 + AHEAD + k), f"a{k}", partition=0)
        producer.produce(topic, _event(f"b{k}", f"b{k % 30}", T0 + k * 10), f"b{k}", partition=1)
    producer.flush(30)
    ahead = _windows(read_range(broker.bootstrap, topic, 0, 0, 300), 100)
    behind = _windows(read_range(broker.bootstrap, topic, 1, 0, 300), 150)
    assert [len(w) for w in ahead] == [100, 100, 100] and [len(w) for w in behind] == [150, 150]
    settings = FlinkSettings(broker.bootstrap, topic, server.url, prefix=topic, config_toml=SKEWED)
    job = ApplyBatches(settings)
    job.open()
    # other partitions' progress read once: what was read while partition 1 was not this
    # job's must not count once it is
    job.gate.interval = 3600.0
    store = FencedRedisStore(server.url, prefix=topic)
    try:
        # partition 1 has records left and has delivered none: it may start earlier, so
        # partition 0 waits, first window included
        assert job.apply(0, ahead[0]) == 0 and job.holding()
        assert job.apply(0, ahead[1]) == 0 and job.release() == 0
        assert _offset(store, topic, 0) == -1
        # partition 1's first window starts earliest: it goes; partition 0, hours ahead of
        # it, still waits
        assert job.apply(1, behind[0]) == 150
        assert job.release() == 0 and job.holding() and _offset(store, topic, 0) == -1
        assert job.apply(0, ahead[2]) == 0  # behind the held ones, whatever its time
        # partition 1 done: nothing left to wait for, the held windows go, in order
        assert job.apply(1, behind[1]) == 150 + 300
        assert not job.holding()
        assert (_offset(store, topic, 0), _offset(store, topic, 1)) == (300, 300)
        for p, n in ((0, 300), (1, 300)):
            ckpt = _checkpoint(store, topic, p)
            assert ckpt is not None and (ckpt.events, ckpt.duplicates) == (n, 0)
    finally:
        job.close()
        store.close()


def test_windows_a_restore_lost_are_read_again_from_kafka(
    broker: Broker, server: RedisServer, lines: list[bytes]
) -> None:
    """Each partition's second window never reaches the job (held in memory when a restore
    rewound the source past it): its third window brings it back from Kafka, and the store
    equals an undisturbed Kafka worker's over the whole topic (dead letters included)."""
    topic = "flink-reread"
    kh.publish(broker.bootstrap, topic, lines)
    settings = FlinkSettings(broker.bootstrap, topic, server.url, prefix=topic, config_toml=CONFIG)
    records: dict[int, list[Any]] = {}
    for p in range(kh.PARTITIONS):
        end = _end(broker, topic, p)
        records[p] = read_range(broker.bootstrap, topic, p, 0, end)
        assert [o for o, _ in records[p]] == list(range(end))
    job = ApplyBatches(settings)
    job.open()
    try:
        for p, got in records.items():
            third = len(got) // 3
            job.apply(p, got[:third])
        job.close()  # the restore: a new Python worker, whatever was held is gone
        job = ApplyBatches(settings)
        job.open()
        for p, got in records.items():
            third = len(got) // 3
            job.apply(p, got[2 * third :])
    finally:
        job.close()
    kh.assert_equal(kh.snapshot(server.url, topic, topic), kh.reference(broker, server.url, topic))


def _end(broker: Broker, topic: str, partition: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"{topic}-ends"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)[1])
    finally:
        consumer.close()

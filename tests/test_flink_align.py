"""The Flink job's event-time alignment pauses a partition far ahead (local mini-cluster, real
Kafka broker, real Redis).

With the shared model, the job's Kafka source aligns its partitions' watermarks
(``run.partition_skew`` as ``scan.watermark.alignment.max-drift``, see
``flink.job.alignment_options``). Partition 0 holds a large backlog an hour of event time
ahead; partition 1 starts at the beginning and is fed while the job runs, its event time moving
on steadily. Observed through the store's per-partition checkpoints: partition 0 is not done
until partition 1's watermark has come near it (without the alignment the job applies
partition 0's backlog at once, while partition 1 is still at its beginning), and then both
finish.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import kafka_helpers as kh
import pytest
from confluent_kafka import Producer
from kafka_helpers import SHARED_CONFIG
from redis_server import RedisServer

from liveprofile.flink.jars import resolve_connector
from liveprofile.flink.job import FlinkSettings, source_ddl, submit
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.producer import ensure_topics, producer_config
from liveprofile.kafka.status import _checkpoint
from liveprofile.redis.fence import FencedRedisStore

pytest.importorskip("pyflink", reason="the Flink runner needs the 'flink' extra")
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]

T0 = 1_704_067_200.0
DRIFT = 600.0  # run.partition_skew, seconds
AHEAD = 3600.0  # partition 0's events start this far ahead of partition 1's first
CONFIG = SHARED_CONFIG.replace("[run]\n", '[run]\npartition_skew = "10m"\n')
#: partition 0's backlog: more than one fetch of the Kafka source holds
BACKLOG = 30_000
#: partition 1, once the job applies it: events per step, steps per second, event time per step
STEP_EVENTS, STEPS_PER_S, STEP_S = 5, 10, 60.0


def _event(n: str, user: str, ts: float) -> bytes:
    return json.dumps(
        {"event_id": n, "user_id": user, "type": "view", "item_id": "i1", "ts": ts}
    ).encode()


class Feed(threading.Thread):
    """Partition 1's events: at ``T0`` until the job has applied some, then moving on by
    ``STEP_S`` of event time every step, until past partition 0's events."""

    def __init__(self, bootstrap: str, topic: str, started: threading.Event) -> None:
        super().__init__(daemon=True)
        self.producer = Producer(producer_config(bootstrap))
        self.topic, self.started, self.sent = topic, started, 0
        self.done, self.stop = threading.Event(), threading.Event()

    def run(self) -> None:
        step = 0
        while T0 + step * STEP_S <= T0 + AHEAD + DRIFT and not self.stop.is_set():
            ts = T0 + step * STEP_S
            for _ in range(STEP_EVENTS):
                value = _event(f"b{self.sent}", f"b{self.sent % 50}", ts)
                self.producer.produce(self.topic, value, f"b{self.sent % 50}", partition=1)
                self.sent += 1
            self.producer.flush(30)
            if self.started.is_set():
                step += 1
            time.sleep(1 / STEPS_PER_S)
        self.done.set()
        self.producer.flush(30)


def _positions(store: FencedRedisStore, topic: str) -> tuple[int, float, int, float]:
    """Partition 0's and 1's next offset and watermark in the store."""
    out: list[Any] = []
    for p in (0, 1):
        ckpt = _checkpoint(store, topic, p)
        offset = 0 if ckpt is None else ckpt.offsets.get(f"kafka:{topic}:{p}", 0)
        out += [offset, 0.0 if ckpt is None else ckpt.watermark]
    return out[0], out[1], out[2], out[3]


def test_a_partition_far_ahead_waits_for_the_lagging_one(
    broker: Broker, server: RedisServer
) -> None:
    topic = "flink-align"
    settings = FlinkSettings(
        broker.bootstrap,
        topic,
        server.url,
        prefix=topic,
        config_toml=CONFIG,
        batch_ms=100,
        checkpoint_ms=1000,
        jars=[str(resolve_connector())],
    )
    assert "'scan.watermark.alignment.max-drift' = '600000 ms'" in source_ddl(settings, "")
    ensure_topics(broker.bootstrap, {topic: 2})
    producer = Producer(producer_config(broker.bootstrap))
    for k in range(BACKLOG):
        user = f"a{k % 500}"
        producer.produce(topic, _event(f"a{k}", user, T0 + AHEAD + k * 0.01), user, partition=0)
        if k % 5000 == 0:
            producer.poll(0)
    producer.flush(60)
    started = threading.Event()
    feed = Feed(broker.bootstrap, topic, started)
    feed.start()
    store = FencedRedisStore(server.url, prefix=topic)
    seen: list[tuple[int, float, int, float]] = []
    client = submit(settings)
    try:

        def finished() -> bool:
            seen.append(_positions(store, topic))
            if seen[-1][2] > 0:
                started.set()  # the job applies partition 1: its event time may move on
            return feed.done.is_set() and seen[-1][0] == BACKLOG and seen[-1][2] == feed.sent

        kh.wait("both partitions applied", finished, timeout=kh.TIMEOUT * 2)
    finally:
        feed.stop.set()
        client.cancel().result()
        store.close()
    done = next(k for k, (offset, *_) in enumerate(seen) if offset == BACKLOG)
    lagging = seen[done][3]
    # partition 0 finished only once partition 1 had come within reach: within the drift (and
    # the source's 5 s watermark delay, and a step or two of partition 1 read but not applied
    # yet); without the alignment partition 0 is done while partition 1 is a few steps in
    assert lagging >= T0 + AHEAD - 1.5 * DRIFT, (lagging - T0, seen[done])
    waited = [s for s in seen[:done] if s[2] > 0 and s[0] < BACKLOG]
    assert waited, "partition 0 never waited while partition 1 was applied"
    assert seen[-1][1] >= T0 + AHEAD and seen[-1][3] >= T0 + AHEAD + DRIFT

"""Event-time alignment of partitions that train one shared model.

A worker replaying a topic reads its partitions as fast as it can, and two workers run at
different speeds, so without a bound one partition may be days ahead of another in event time.
With a model per partition that does not matter; with a shared model it does: a partition far
ahead teaches the model what the lagging partitions' users will do (their future), and is itself
predicted by a model that has not yet seen the others' recent events. So, as Flink's watermark
alignment does for its sources, a partition whose watermark is more than ``run.partition_skew``
ahead of the slowest partition that still has events to apply waits: the worker pauses it
(Kafka stops fetching it), keeps the records it already fetched, and applies them when the
slowest partition has caught up. The slowest partition never waits, so some partition can
always go on (if its owner died, Kafka hands it to another member after the session timeout).

The watermarks of a worker's own partitions are its states'; those of the other workers'
partitions are read from the store at most every ``interval`` seconds. Whether another worker's
partition still has events to apply takes its end offset, a request to the broker: asked every
``interval`` for every such partition, these requests were where two workers spent most of
their time (py-spy, 2 cores under load). An end offset only grows, so a partition whose
committed offset is below the end last read has events left for sure; the ends are read again
only when a partition looks finished, and at most every ``end_interval`` seconds (so a partition
that has just received new events may count as finished, not holding the others back, for up to
that long). A batch starts when its partition is within the bound, so a partition can run ahead
of the slowest by the bound plus one batch.

Another worker's partition counts with the event time its batch *in flight* reaches, not only
with what it committed: a worker announces a batch's latest event time (:func:`announce`, one
``HSET``) before it applies it. Without that, workers replaying history ran in lockstep: on the
Complete Journey one batch of 5,000 events spans about four days of one partition's event
time, far more than the bound, so a worker that had applied its partitions' batches waited
until the other had *committed* its own (a barrier at every batch: two workers slower than
one). Counting the batch in flight lets a worker start its next batch while the other applies
its current one; it adds nothing to what the shared model misses (a batch already misses the
batches other workers are applying at the same time, see :mod:`liveprofile.kafka.shared_model`),
and a partition may now run ahead of the slowest one's *committed* events by the bound plus
one batch of each. An announcement is a hint for pacing only: one left by a worker that died
mid-batch makes its partition look at most one batch further on until the next owner's first
batch, and has no effect on what is applied or committed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from liveprofile.redis.fence import FencedRedisStore

log = logging.getLogger("liveprofile")

#: the store namespace (a Redis hash) of each partition scope's batch in flight: its latest
#: event time, as announced before the batch is applied
STARTED_NAMESPACE = "started"


def announce(store: FencedRedisStore, scope: str, ts: float) -> None:
    """Record that partition ``scope``'s batch being applied now reaches event time ``ts``
    (a pacing hint for the other workers, sent beside a commit in flight, which does not write
    it; a failure is logged, not raised)."""
    try:
        with store.beside():
            store.client.hset(f"{store.prefix}:{STARTED_NAMESPACE}", scope, repr(float(ts)))
    except redis.RedisError as exc:
        log.debug("batch of %s not announced: %s", scope, exc)


def started(store: FencedRedisStore, scope: str) -> float:
    """The event time the last announced batch of ``scope`` reaches (``-inf``: none), read
    beside a commit in flight."""
    try:
        with store.beside():
            value: Any = store.client.hget(f"{store.prefix}:{STARTED_NAMESPACE}", scope)
    except redis.RedisError as exc:
        log.debug("batch of %s not read: %s", scope, exc)
        return -math.inf
    return -math.inf if value is None else float(value)


class SkewGate:
    """Holds back the partitions of one consumer that run too far ahead in event time.

    ``committed(p)`` gives a partition's committed (watermark, next offset; -1: none yet) from
    the store; ``own`` (see :meth:`floor`) the same for the consumer's partitions, from memory.
    """

    def __init__(
        self,
        committed: Callable[[int], tuple[float, int]],
        topic: str,
        skew: float,
        *,
        interval: float = 0.05,
        end_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.committed = committed
        self.topic = topic
        self.skew = skew
        self.interval = interval
        self.end_interval = end_interval
        self._clock = clock
        #: the other workers' partitions' end offsets as last read from Kafka, and when
        self._ends: dict[int, int] = {}
        self._ends_read = -math.inf
        #: how often the end offsets were read from Kafka
        self.end_reads = 0
        #: paused partitions -> the records fetched for them and not applied yet, in order
        self.held: dict[int, list[Any]] = {}
        self._others = math.inf
        self._checked = -math.inf
        self._partitions: list[int] = []

    def floor(self, consumer: Any, own: Mapping[int, tuple[float, int]]) -> float:
        """The lowest watermark of the topic's partitions with events left (``inf``: none)."""
        from confluent_kafka import KafkaException, TopicPartition

        lows = []
        try:
            for p, (watermark, done) in own.items():
                end = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
                if end is None or end[1] < 0 or max(done, 0) < end[1]:
                    lows.append(watermark)
            now = self._clock()
            if now - self._checked >= self.interval:
                if not self._partitions:
                    meta = consumer.list_topics(self.topic, timeout=10)
                    self._partitions = sorted(meta.topics[self.topic].partitions)
                others = []
                for p in self._partitions:
                    if p in own:
                        continue
                    watermark, done = self.committed(p)
                    if max(done, 0) >= self._ends.get(p, -1):  # finished, or new events?
                        self._read_ends(consumer, own, now)
                    if max(done, 0) < self._ends.get(p, -1):
                        others.append(watermark)
                self._others, self._checked = min(others, default=math.inf), now
        except KafkaException as exc:  # the broker busy: hold nothing back this time
            log.debug("partition watermarks not read: %s", exc)
            return -math.inf if not lows else min(lows)
        return min(min(lows, default=math.inf), self._others)

    def _read_ends(self, consumer: Any, own: Mapping[int, Any], now: float) -> None:
        """Read the end offsets of the partitions not in ``own`` from Kafka, unless they were
        read less than ``end_interval`` seconds ago."""
        from confluent_kafka import TopicPartition

        if now - self._ends_read < self.end_interval:
            return
        for p in self._partitions:
            if p not in own:
                self._ends[p] = consumer.get_watermark_offsets(TopicPartition(self.topic, p), 10)[1]
        self._ends_read = now
        self.end_reads += 1

    def hold(self, consumer: Any, partition: int, records: list[Any]) -> None:
        """Keep ``records`` of ``partition`` for later and stop fetching it."""
        from confluent_kafka import TopicPartition

        if partition not in self.held:
            consumer.pause([TopicPartition(self.topic, partition)])
        self.held.setdefault(partition, []).extend(records)

    def ready(
        self, consumer: Any, own: Mapping[int, tuple[float, int]]
    ) -> list[tuple[int, list[Any]]]:
        """The held partitions back within the bound, resumed, with their held records."""
        from confluent_kafka import TopicPartition

        for p in [p for p in self.held if p not in own]:  # its state dropped after a failure:
            consumer.resume([TopicPartition(self.topic, p)])  # the worker reloads and seeks it
            self.forget([p])
        if not self.held:
            return []
        limit = self.floor(consumer, own) + self.skew
        out = []
        for p in sorted(self.held):
            if own[p][0] <= limit:
                consumer.resume([TopicPartition(self.topic, p)])
                out.append((p, self.held.pop(p)))
        return out

    def forget(self, partitions: list[int]) -> None:
        """Partitions revoked or lost: their held records are the next owner's to read."""
        for p in partitions:
            self.held.pop(p, None)

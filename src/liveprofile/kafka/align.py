"""Event-time alignment of partitions that train one shared model.

A worker replaying a topic reads its partitions as fast as it can, and two workers run at
different speeds, so without a bound one partition may be days ahead of another in event time.
With a model per partition that does not matter; with a shared model it does: a partition far
ahead teaches the model what the lagging partitions' users will do (their future), and is itself
predicted by a model that has not yet seen the others' recent events. So, as Flink's watermark
alignment does for its sources, a partition whose watermark is more than ``run.partition_skew``
ahead of the slowest partition that still has events to apply waits: the worker holds the
records fetched for it in memory, batch by batch, and applies them one batch at a time as the
slowest partition catches up (the partitions furthest behind in event time first). Only when
more than ``max_held`` batches are held does it pause the partition (Kafka stops fetching it),
and it resumes it once half of them have been applied: pausing at every wait made two workers
slower than one (a paused partition's prefetched records are dropped by the client and fetched
again on resume, and the worker waited for them). The slowest partition never waits, so some
partition can always go on (if its owner died, Kafka hands it to another member after the
session timeout). Held records are dropped with their partition's state (revoked, lost, or a
failed commit: the worker reads the partition again from the store's offset, and must not apply
them a second time), and a paused partition is resumed then: the client keeps a pause across a
revoke and a later assignment of the same partition.

The watermarks of a worker's own partitions are its states'; those of the other workers'
partitions are read from the store at most every ``interval`` seconds, all in one round trip
(``committed_many``, see :func:`progress`). Whether another worker's
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

But what a batch misses is bounded in batches, not in event time, and a batch replaying history
spans days (5,000 Complete Journey events of one partition: about two and a half). Counting the
whole batch in flight let two workers each start a batch while the other's previous one was
still uncommitted, so each batch missed up to two of the other's, days of its learning, and the
shared model's AUC over 300,000 events fell 0.001 to 0.011 below one worker's, depending on how
the workers' speeds interleaved. So a batch in flight counts only up to ``run.model_staleness``
(default 12 h) past its partition's committed watermark (:meth:`KafkaWorker._counted
<liveprofile.kafka.worker.KafkaWorker._counted>`): a worker whose partition would run further
ahead waits for the other's commit. Live, a batch spans the events of ``max_batch_delay`` and
the bound never binds; replaying, it trades events/s for a model that misses at most about the
bound plus one batch of the other partitions' events (``benchmarks/scaleout.py
--model-staleness``). Empty counts the whole batch in flight, as before.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from liveprofile.kafka.partition import partition_scope, source_name
from liveprofile.redis.fence import STARTED_NAMESPACE, FencedRedisStore
from liveprofile.store.layout import CHECKPOINT, decode_checkpoint
from liveprofile.store.scoped import ScopedStore

log = logging.getLogger("liveprofile")


def counted(committed: float, began: float, staleness: float | None) -> float:
    """Another partition's watermark for the alignment: its ``committed`` one, moved on to the
    event time its batch in flight reaches (``began``) by at most ``staleness``
    (``run.model_staleness``; None: all of the batch in flight).

    >>> counted(100.0, 500.0, 60.0), counted(100.0, 500.0, None), counted(100.0, -math.inf, 60.0)
    (160.0, 500.0, 100.0)
    """
    if staleness is None:
        return max(committed, began)
    return max(committed, min(began, committed + staleness))


def progress_reads(
    store: FencedRedisStore, topic: str, partitions: list[int]
) -> dict[str, list[str]]:
    """What :func:`progress` reads for ``partitions``, in one ``read_many``: each partition's
    checkpoint and its announced batch in flight."""
    scopes = [ScopedStore(store, partition_scope(topic, p)) for p in partitions]
    return {
        "meta": [s.meta_name(CHECKPOINT) for s in scopes],
        STARTED_NAMESPACE: [s.scope for s in scopes],
    }


def progress(
    found: Mapping[str, list[bytes | None]],
    topic: str,
    partitions: list[int],
    staleness: float | None,
) -> dict[int, tuple[float, int]]:
    """Each of ``partitions``' (watermark counted for the alignment, next offset in the store;
    -1: none yet) from the rows :func:`progress_reads` asked for."""
    out = {}
    for p, blob, began in zip(partitions, found["meta"], found[STARTED_NAMESPACE], strict=True):
        ckpt = decode_checkpoint(blob)
        flight = -math.inf if began is None else float(began)
        out[p] = (
            counted(ckpt.watermark, flight, staleness),
            ckpt.offsets.get(source_name(topic, p), -1),
        )
    return out


def behind_first(partitions: Iterable[int], own: Mapping[int, tuple[float, int]]) -> list[int]:
    """``partitions`` with the one furthest behind in event time first (by ``own``'s
    watermarks; one not in ``own`` last), then by number.

    >>> behind_first([2, 1, 0], {0: (50.0, 3), 1: (10.0, 7)})
    [1, 0, 2]
    """
    return sorted(partitions, key=lambda p: (own[p][0] if p in own else math.inf, p))


class SkewGate:
    """Holds back the partitions of one consumer that run too far ahead in event time.

    ``committed(p)`` gives a partition's committed (watermark, next offset; -1: none yet) from
    the store; ``committed_many(ps)`` (if given) the same for several partitions in one read;
    ``own`` (see :meth:`floor`) the same for the consumer's partitions, from memory. A
    partition with more than ``max_held`` batches held is paused (see the module).
    """

    def __init__(
        self,
        committed: Callable[[int], tuple[float, int]],
        topic: str,
        skew: float,
        *,
        committed_many: Callable[[list[int]], Mapping[int, tuple[float, int]]] | None = None,
        interval: float = 0.01,
        end_interval: float = 1.0,
        max_held: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.committed = committed
        self.committed_many = committed_many
        self.topic = topic
        self.skew = skew
        self.interval = interval
        self.end_interval = end_interval
        self.max_held = max_held
        self._clock = clock
        #: the other workers' partitions' end offsets as last read from Kafka, and when
        self._ends: dict[int, int] = {}
        self._ends_read = -math.inf
        #: how often the end offsets were read from Kafka
        self.end_reads = 0
        #: partitions waiting -> the batches fetched for them and not applied yet, in order
        self.held: dict[int, list[list[Any]]] = {}
        #: partitions paused (too many batches held)
        self.paused: set[int] = set()
        #: how often a partition was paused
        self.pauses = 0
        self._others = math.inf
        self._checked = -math.inf
        self._partitions: list[int] = []
        #: the partitions owned when the others were last read
        self._owned: set[int] = set()

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
            # read again after ``interval``, or at once when the partitions owned changed (the
            # last read may count one that is now owned, as it was: not started)
            if now - self._checked >= self.interval or own.keys() != self._owned:
                self._owned = set(own)
                if not self._partitions:
                    meta = consumer.list_topics(self.topic, timeout=10)
                    self._partitions = sorted(meta.topics[self.topic].partitions)
                others = []
                for p, (watermark, done) in self._read_others(own).items():
                    if max(done, 0) >= self._ends.get(p, -1):  # finished, or new events?
                        self._read_ends(consumer, own, now)
                    if max(done, 0) < self._ends.get(p, -1):
                        others.append(watermark)
                self._others, self._checked = min(others, default=math.inf), now
        except KafkaException as exc:  # the broker busy: hold nothing back this time
            log.debug("partition watermarks not read: %s", exc)
            return -math.inf if not lows else min(lows)
        return min(min(lows, default=math.inf), self._others)

    def _read_others(self, own: Mapping[int, Any]) -> Mapping[int, tuple[float, int]]:
        """The committed (watermark, next offset) of the partitions not in ``own``."""
        others = [p for p in self._partitions if p not in own]
        if self.committed_many is not None:
            return self.committed_many(others)
        return {p: self.committed(p) for p in others}

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
        """Keep ``records`` of ``partition`` for later, as one batch; pause the partition
        when more than ``max_held`` batches are held."""
        from confluent_kafka import TopicPartition

        batches = self.held.setdefault(partition, [])
        batches.append(records)
        if len(batches) > self.max_held and partition not in self.paused:
            consumer.pause([TopicPartition(self.topic, partition)])
            self.paused.add(partition)
            self.pauses += 1

    def ready(
        self, consumer: Any, own: Mapping[int, tuple[float, int]]
    ) -> list[tuple[int, list[Any]]]:
        """The next held batch of each held partition back within the bound (a paused one
        is resumed once no more than half of ``max_held`` batches are left)."""
        from confluent_kafka import TopicPartition

        self.forget(consumer, [p for p in self.held if p not in own])  # its state dropped
        if not self.held:
            return []
        limit = self.floor(consumer, own) + self.skew
        out = []
        for p in behind_first(self.held, own):  # (floor may have dropped some: read again)
            if p not in own or own[p][0] > limit:
                continue
            batches = self.held[p]
            out.append((p, batches.pop(0)))
            if not batches:
                del self.held[p]
            if p in self.paused and len(batches) <= self.max_held // 2:
                consumer.resume([TopicPartition(self.topic, p)])
                self.paused.discard(p)
        return out

    def forget(self, consumer: Any, partitions: list[int]) -> None:
        """Partitions revoked, lost, or whose state was dropped (to be read again from the
        store's offset): their held records are not to be applied, and a paused one is
        resumed (the client keeps a pause across a revoke and a new assignment)."""
        from confluent_kafka import TopicPartition

        for p in partitions:
            self.held.pop(p, None)
        resume = [TopicPartition(self.topic, p) for p in partitions if p in self.paused]
        if resume:
            consumer.resume(resume)
            self.paused.difference_update(partitions)

"""The Kafka runner: consumer-group members that apply a topic's partitions to a Redis store.

Kafka assigns the topic's partitions to the members of a consumer group and moves them when a
member joins, leaves or dies (``cooperative-sticky``: only the partitions that move stop). The
unit of state is the **partition**, not the worker:

* **Per partition** (store scope ``{topic}.{p}``, see :class:`~liveprofile.store.scoped.
  ScopedStore`): the checkpoint with the partition's offset, the learners' metrics (and the
  learners themselves with ``run.shared_model = false``), the pending examples, item
  statistics, the de-duplication window, the watermark, segment members and the last-seen
  index. A worker holds one :class:`PipelineState` per partition it
  owns, loads it when the partition is assigned and drops it when the partition is revoked, so
  a partition's pending examples, model and offset always move together.
* **Shared by the group**: profiles and dead letters (namespaces ``profile`` and
  ``deadletter``), the pipeline config, and with ``run.shared_model`` (the default) one model
  per task that every batch merges its changes into (:mod:`liveprofile.kafka.shared_model`).
  A user's events all carry the same key, hence lie in one partition, so a profile is only
  ever written by the one owner of that partition.

Each batch (the records of one partition returned by one poll, closed by size or by
``max_batch_delay``) commits its profiles, the partition's model and pending examples, its dead
letters and the partition's next offset in one ``MULTI``/``EXEC``, fenced per partition (see
:mod:`liveprofile.redis.fence`) so that a stale owner cannot commit after the partition moved. On
assignment a worker seeks to the offset in the store (Kafka's committed offsets are written after
each batch only for monitoring: ``liveprofile status --kafka`` shows the lag). Rebalance
callbacks run inside ``consume()``, between batches, so a revoked partition's last batch is
always committed before it is handed over.

What follows: with per-partition models every partition's state is a function of that
partition's records alone, so the final store (profiles, models, scores, metrics, dead letters)
is the same whichever worker owned which partition when, however often they moved, and equal to
one worker's uninterrupted run. A shared model's merge commits with the partition's offset, so
no batch's changes are added twice; what it learns depends on how the partitions' batches
interleave (with one partition, it equals the partition's own model). Item statistics count
one partition's users each. Identity links
whose anonymous and user ids lie in different partitions are not merged across partitions.

With ``ranker.every``, the worker that owns partition 0 also runs the learned ranker's rounds
(:mod:`liveprofile.kafka.rounds`).

``LIVEPROFILE_BATCH_TRACE=FILE`` in a worker's environment has it write one line of timings per
batch (:mod:`liveprofile.kafka.trace`), to see where freshness goes.

A batch's commit is sent in the background (``overlap``, see :mod:`liveprofile.redis.fence`)
while the worker polls, reads and applies the next batch (the rows that commit writes are read
from its copy, the shared model's rows with its merge made here); a failed one drops its
partition as a failed commit does. Rebalances, reloads and the loop's end wait for the commit
in flight first; the offsets reported to Kafka wait for it too (:mod:`liveprofile.kafka.
ownership`).

Dead letters are kept in the store (keyed ``{topic}:{partition}:{offset}``, exact) and also sent
to the dead-letter topic just before the batch commits (at least once: a crash between the two
sends them again on replay, under the same key).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liveprofile.config import PipelineConfig
from liveprofile.engine.gc_tuning import fewer_collections
from liveprofile.engine.local import RunStats
from liveprofile.events.schema import EventParser
from liveprofile.kafka.align import (
    SkewGate,
    behind_first,
    counted,
    progress,
    progress_reads,
)
from liveprofile.kafka.ownership import Ownership
from liveprofile.kafka.partition import (
    OwnedPartition,
    apply_records,
    partition_scope,
    positions,
    source_name,
)
from liveprofile.kafka.producer import dead_letter_topic, producer_config
from liveprofile.kafka.rounds import LEAD_PARTITION
from liveprofile.kafka.trace import BatchTrace, trace_path
from liveprofile.redis.fence import CommitFailed, FencedOut, FencedRedisStore
from liveprofile.store.layout import check_config, read_checkpoint
from liveprofile.store.scoped import ScopedStore

log = logging.getLogger("liveprofile")


def consumer_config(bootstrap: str, group: str, **extra: Any) -> dict[str, Any]:
    """librdkafka settings of a worker: cooperative rebalancing, offsets kept by the store."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "partition.assignment.strategy": "cooperative-sticky",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        "logger": log,
        **extra,
    }


class KafkaWorker(Ownership):
    """One member of consumer group ``group`` reading ``topic`` into ``store``.

    ``batch_size`` records per poll at most; a poll returns ``max_batch_delay`` seconds
    (``run.max_batch_delay``) after the previous one returned, with what has arrived (at once
    when applying the previous batch took longer), so a quiet stream still commits promptly
    and the records that came while a batch was applied do not wait a whole delay more.
    ``run`` returns after ``max_idle_polls`` empty polls in a row, or when ``stop`` is set.
    With ``overlap`` (the default) a batch's commit is sent in the background (see above).
    The partitions it owns, their rebalances and recovery: :class:`~liveprofile.kafka.
    ownership.Ownership`.
    """

    def __init__(
        self,
        config: PipelineConfig,
        store: FencedRedisStore,
        bootstrap: str,
        topic: str,
        group: str,
        *,
        batch_size: int = 1000,
        max_batch_delay: float | None = None,
        client_id: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
        trace: Path | None = None,
        overlap: bool = True,
    ) -> None:
        skew = config.run.partition_skew_s
        gate = (
            SkewGate(self._committed, topic, skew, committed_many=self._committed_many)
            if skew is not None and config.run.shared_model
            else None
        )
        super().__init__(config, store, topic, gate)
        #: how far another partition's batch in flight counts past its committed watermark
        self.staleness = config.run.model_staleness_s
        self.overlap = overlap
        self.bootstrap = bootstrap
        self.group = group
        self.batch_size = batch_size
        #: seconds a poll waits for ``batch_size`` records (default: ``run.max_batch_delay``)
        self.max_batch_delay = (
            config.run.max_batch_delay_s if max_batch_delay is None else max_batch_delay
        )
        self.client_id = client_id
        self._parser = EventParser()
        self._clock = clock
        self._producer: Any = None
        #: per-batch timings (:mod:`liveprofile.kafka.trace`), off unless a file is named
        self.trace_file = trace if trace is not None else trace_path()
        self._trace: BatchTrace | None = None

    def _committed(self, partition: int) -> tuple[float, int]:
        """Another worker's partition: (its watermark, counting the batch it applies now;
        its next offset in the store), read beside a commit in flight (not of it); an outage
        is waited out."""
        scope = ScopedStore(self.patient, partition_scope(self.topic, partition))
        try:
            ckpt = read_checkpoint(scope)
        except CommitFailed as exc:  # one sent in the background, met here
            self._failed(exc)
            ckpt = read_checkpoint(scope)
        watermark = counted(ckpt.watermark, self.store.started(scope.scope), self.staleness)
        return watermark, ckpt.offsets.get(source_name(self.topic, partition), -1)

    def _committed_many(self, partitions: list[int]) -> dict[int, tuple[float, int]]:
        """:meth:`_committed` of several partitions, in one round trip to a store that reads
        several namespaces at once (``read_many``), else one partition after the other."""
        read_many = getattr(self.store, "read_many", None)
        if read_many is None or not partitions:
            return {p: self._committed(p) for p in partitions}
        reads = progress_reads(self.store, self.topic, partitions)
        try:
            found = self.patient.retried(lambda: read_many(reads))
        except CommitFailed as exc:  # one sent in the background, met here
            self._failed(exc)
            found = self.patient.retried(lambda: read_many(reads))
        return progress(found, self.topic, partitions, self.staleness)

    # -- the loop ------------------------------------------------------------------------------

    def run(
        self, max_idle_polls: int | None = None, stop: threading.Event | None = None
    ) -> RunStats:
        """Consume until ``max_idle_polls`` empty polls in a row (None: forever) or ``stop``."""
        from confluent_kafka import Consumer, Producer

        self.store.setup()
        check_config(self.store, self.config)
        self.store.overlap = self.overlap
        extra = {} if self.client_id is None else {"client.id": self.client_id}
        self._consumer = Consumer(consumer_config(self.bootstrap, self.group, **extra))
        self._producer = Producer(producer_config(self.bootstrap))
        self._warn_missing_topic()
        self._consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        stats = RunStats()
        started = self._clock()
        if self.trace_file is not None:
            self._trace = BatchTrace(self.trace_file, clock=self._clock)
        try:
            with fewer_collections():
                self._loop(stats, max_idle_polls, stop)
                self._settle()
        finally:
            stats.seconds = self._clock() - started
            self.close()
        return stats

    def _warn_missing_topic(self) -> None:
        """Log a warning when the topic does not exist yet: the worker waits for it, but if the
        broker creates it on the subscription, it gets the broker's default partition count,
        which a publisher asking for another one later does not change."""
        from confluent_kafka import KafkaException

        try:  # every topic's metadata: asking for this one could have the broker create it
            topics = self._consumer.list_topics(timeout=10).topics
        except KafkaException as exc:
            log.warning("cannot list the topics at %s: %s", self.bootstrap, exc)
            return
        if self.topic not in topics:
            log.warning(
                "topic %r does not exist yet at %s: the worker waits for it. If the broker "
                "creates it (auto.create.topics.enable), it gets the broker's default partition "
                "count (num.partitions), and a publisher asking for another count later keeps "
                "that one; create the topic first (liveprofile publish/collect --kafka "
                "--topic-partitions N) to choose its partitions",
                self.topic,
                self.bootstrap,
            )

    def _loop(
        self, stats: RunStats, max_idle_polls: int | None, stop: threading.Event | None
    ) -> None:
        idle = 0
        opened = self._clock()  # when the batch being filled began to collect records
        while not (stop is not None and stop.is_set()):
            if max_idle_polls is not None and idle >= max_idle_polls:
                return
            delay = self.max_batch_delay
            if self.gate is not None and self.gate.held:
                delay = min(delay, self.gate.interval)  # some waiting: look again soon
            polled = self._clock()
            # the records that arrived while the last batch was applied have waited already:
            # the batch closes max_batch_delay after the last poll returned, not after this one
            # starts (at once when applying took longer), so no record waits for two delays
            wait = poll_wait(opened, delay, polled)
            for partition in sorted(self.dropped):
                self._restart(partition)
            if self._unreported:
                self._report_offsets(())  # held while their commits were in flight
            messages = self._consumer.consume(self.batch_size, wait)
            opened = self._clock()
            if self._trace is not None:
                self._trace.polled(polled, opened)
            by_partition: dict[int, list[Any]] = {}
            for msg in messages:
                if msg.error() is not None:
                    log.warning("kafka: %s", msg.error())
                    continue
                by_partition.setdefault(msg.partition(), []).append(msg)
            if by_partition:
                idle = 0
            elif wait and self.rebalances and not (self.gate and self.gate.held):
                idle += 1  # once the group has assigned partitions, and none waits (align)
            gate = self.gate
            for partition, batch in self._behind_first(by_partition):
                owned = self.owned.get(partition)
                if owned is None:  # its state was dropped after a failed commit: start again
                    self._restart(partition)
                    continue
                if gate is not None and (
                    partition in gate.held
                    or owned.state.watermark
                    > gate.floor(self._consumer, self._positions()) + gate.skew
                ):
                    if self.owned.get(partition) is owned:  # (not dropped by that look)
                        gate.hold(self._consumer, partition, batch)
                    continue
                if self.owned.get(partition) is owned:
                    self._apply(owned, batch, stats)
            if gate is not None and gate.held:
                for partition, batch in gate.ready(self._consumer, self._positions()):
                    owned = self.owned.get(partition)
                    if owned is None:  # dropped by an earlier batch's failed commit
                        continue
                    self._apply(owned, batch, stats)
                    by_partition.setdefault(partition, [])
            if by_partition:
                self._report_offsets(list(by_partition))

    def _behind_first(self, batches: dict[int, list[Any]]) -> list[tuple[int, list[Any]]]:
        """The partitions' fetched batches, the partition furthest behind in event time first
        (then by partition), so a shared model learns the partitions in about event-time order
        whatever order the client fetched them in."""
        return [(p, batches[p]) for p in behind_first(batches, self._positions())]

    def _positions(self) -> dict[int, tuple[float, int]]:
        """Each owned partition's (watermark, next offset in the store; -1: none yet)."""
        return positions(self.topic, self.owned)

    def _apply(self, owned: OwnedPartition, messages: list[Any], stats: RunStats) -> None:
        records = ((msg.offset(), msg.value()) for msg in messages)
        p = owned.partition
        scope = owned.view.scope
        start = None if self.gate is None else (lambda ts: self.store.announce(scope, ts))
        prior = owned.state.checkpoint.offsets.get(source_name(self.topic, p), -1)
        began, cpu = self._clock(), time.process_time()
        try:
            batch = apply_records(
                self.store, self.topic, owned, records, stats, self._parser, self._send_dead, start
            )
        except FencedOut:
            # another owner committed it, or the store lost this worker's last commits
            log.warning("partition %d: the store is not at its state; reloading it", p)
            self._drop([p])
            return
        except CommitFailed as exc:  # the previous batch's, met at this one's store use:
            self._drop([p])  # read beside it or before the failure was known: read it again
            self._failed(exc)
            return
        except BaseException as exc:
            self.owned.pop(p, None)  # the state ran ahead of the store
            if not self.outage.waited(exc):
                raise
            self._drop([p])
            return
        self.outage.over()
        if batch is not None:
            self._landed[p] = prior  # this batch's commit settled the ones before
            if p == LEAD_PARTITION and self.rounds.wanted(self.config):
                self._settle()  # the rounds take committed batches
                if p not in self.owned:  # this one's commit failed: read it again
                    return
            if self._trace is not None:
                cpu = time.process_time() - cpu
                appended = (messages[0].timestamp()[1] / 1e3, messages[-1].timestamp()[1] / 1e3)
                wm = owned.state.checkpoint.watermark
                self._trace.applied(
                    p,
                    len(messages),
                    began,
                    self._clock(),
                    cpu,
                    appended,
                    watermark=wm,
                    end=messages[-1].offset() + 1,
                )
            self.rounds.committed(p, owned.view.scope, owned.state.checkpoint.seq, batch)

    def _send_dead(self, rows: dict[str, bytes | None]) -> None:
        for key, row in rows.items():
            self._producer.produce(dead_letter_topic(self.topic), row, key.encode())
        self._producer.flush(30)

    def close(self) -> None:
        """Leave the group (revoking, and so committing, what this worker owns)."""
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None
        if self._producer is not None:
            self._producer.flush(30)
            self._producer = None
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        self.owned.clear()


def poll_wait(opened: float, delay: float, now: float) -> float:
    """Seconds a poll at ``now`` waits for records: until ``delay`` after ``opened``, when the
    previous poll returned (the records that came while its batch was applied have waited
    since), and not at all when that is past.

    >>> round(poll_wait(10.0, 0.2, 10.05), 3), poll_wait(10.0, 0.2, 10.5)
    (0.15, 0.0)
    """
    return max(0.0, opened + delay - now)

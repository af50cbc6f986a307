"""The partitions a Kafka worker owns: loaded on assignment, dropped and reloaded on failure.

:class:`Ownership` is the part of :class:`~liveprofile.kafka.worker.KafkaWorker` that keeps
one :class:`~liveprofile.kafka.partition.OwnedPartition` per partition Kafka assigned to it:

* the rebalance callbacks (run inside ``consume()``, between batches): an assigned partition
  is loaded from the store and sought to the store's offset; a revoked one waits for the
  commit in flight, so its last batch is committed before it is handed over;
* recovery: a partition whose state ran ahead of the store (a fenced or failed commit, a
  store that could not be reached) is dropped and reloaded from the store once it answers
  (:class:`~liveprofile.redis.outage.StoreOutage` paces the tries);
* the offsets reported to Kafka (monitoring only: lag, group tools): each partition's offset
  as its last *landed* commit wrote it. While a batch's commit is sent in the background
  (:mod:`liveprofile.redis.fence`) its partition reports the offset before that batch, and
  the batch's own once the commit has landed (at the next report or the next loop turn).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from liveprofile.config import PipelineConfig
from liveprofile.kafka.align import SkewGate
from liveprofile.kafka.partition import OwnedPartition, load_partition, source_name
from liveprofile.kafka.rounds import LeadRounds
from liveprofile.redis.fence import CommitFailed, FencedRedisStore
from liveprofile.redis.outage import PatientStore, StoreOutage

log = logging.getLogger("liveprofile")


class Ownership:
    """The partitions of ``topic`` a worker owns, over ``store`` (see the module)."""

    def __init__(
        self, config: PipelineConfig, store: FencedRedisStore, topic: str, gate: SkewGate | None
    ) -> None:
        self.config = config
        self.store = store
        self.topic = topic
        self.owned: dict[int, OwnedPartition] = {}
        #: assigned partitions whose state was dropped (a failed commit): reloaded next poll
        self.dropped: set[int] = set()
        #: waits out a store that cannot be reached (the partitions' states are then dropped)
        self.outage = StoreOutage(store.url)
        #: the store for reads that wait an outage out (other partitions' checkpoints)
        self.patient = PatientStore(store, self.outage)
        #: each task's shared model as this worker last read it (``run.shared_model``)
        self.models: dict[str, Any] = {}
        #: with a shared model, holds back partitions too far ahead in event time (kafka.align)
        self.gate = gate
        #: the ranker rounds (``ranker.every``), run while this worker owns partition 0
        self.rounds = LeadRounds(store, config, self.outage)
        self.rebalances = 0
        self._consumer: Any = None
        #: each owned partition's offset as the store holds it with its last commit landed
        self._landed: dict[int, int] = {}
        #: partitions whose offset is still to be reported (held while its commit flies)
        self._unreported: set[int] = set()

    def _load(self, partition: int) -> int:
        """Load ``partition`` from the store as owned; the next offset to read (-1: none)."""
        owned, offset = load_partition(self.store, self.config, self.topic, partition, self.models)
        self.owned[partition] = owned
        self._landed[partition] = offset
        self.dropped.discard(partition)
        return offset

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self._settle()
        self.rebalances += 1
        seek = []
        for tp in partitions:
            try:
                offset = self._load(tp.partition)
            except Exception as exc:
                if not self.outage.waited(exc):
                    raise
                self.dropped.add(tp.partition)  # loaded, and sought, once the store answers
                seek.append(TopicPartition(tp.topic, tp.partition))
                continue
            start = OFFSET_BEGINNING if offset < 0 else offset
            seek.append(TopicPartition(tp.topic, tp.partition, start))
        log.info("assigned %s", describe(seek))
        consumer.incremental_assign(seek)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._settle()  # the batch in flight commits before its partition moves
        self._report_offsets([tp.partition for tp in partitions])
        self._release(consumer, partitions)
        log.info("revoked %s", describe(partitions))

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._settle()
        self._release(consumer, partitions)
        log.warning("lost %s (another member may own them already)", describe(partitions))

    def _release(self, consumer: Any, partitions: list[Any]) -> None:
        self.rebalances += 1
        gone = [tp.partition for tp in partitions]
        for p in gone:
            self.owned.pop(p, None)
            self.dropped.discard(p)
            self._landed.pop(p, None)
            self._unreported.discard(p)
        self.rounds.drop(gone)
        if self.gate is not None:
            self.gate.forget(consumer, gone)
        consumer.incremental_unassign(partitions)

    def _drop(self, partitions: Iterable[int]) -> None:
        """Drop the states of ``partitions`` (ahead of the store): reloaded next poll."""
        partitions = list(partitions)
        for p in partitions:
            self.owned.pop(p, None)
            self.rounds.drop([p])
            self.dropped.add(p)
        if self.gate is not None and self._consumer is not None:
            self.gate.forget(self._consumer, partitions)  # read again from the store's offset

    def _report_offsets(self, partitions: Iterable[int]) -> None:
        """Commit the store's offsets of ``partitions`` (and of those held back before) to
        Kafka, for monitoring only; a partition whose commit is still in flight reports the
        offset of its last landed one, and its own once that lands (see the module)."""
        from confluent_kafka import KafkaException, TopicPartition

        self._unreported.update(partitions)
        try:
            flying = self.store.in_flight()
        except CommitFailed as exc:
            self._failed(exc)
            flying = None
        offsets = []
        for p in sorted(self._unreported):
            owned = self.owned.get(p)
            offset: int | None = None
            if owned is None:
                self._unreported.discard(p)
            elif owned.view.scope == flying:
                offset = self._landed.get(p, -1)  # and again once its commit lands
            else:
                self._unreported.discard(p)
                offset = owned.state.checkpoint.offsets.get(source_name(self.topic, p))
            if offset is not None and offset >= 0:
                offsets.append(TopicPartition(self.topic, p, offset))
        if offsets and self._consumer is not None:
            try:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            except KafkaException as exc:  # only monitoring: never fatal
                log.debug("offsets not reported to Kafka: %s", exc)

    def _settle(self) -> None:
        """Wait for the commit in flight; a failed one drops its partition (see _failed)."""
        try:
            self.store.settle()
        except CommitFailed as exc:
            self._failed(exc)

    def _failed(self, exc: CommitFailed) -> None:
        """Drop the partition whose commit failed in the background, to reload it from the
        store, as a failed commit in the foreground does; raise ``exc`` unless another worker
        had committed the partition (fenced out) or the store could not be reached (then wait
        it out)."""
        self._drop([p for p, owned in self.owned.items() if owned.view.scope == exc.scope])
        if not exc.fenced_out and not self.outage.waited(exc.__cause__ or exc):
            raise exc
        log.warning("%s; reloading it", exc)

    def _restart(self, partition: int) -> None:
        """Reload a partition still assigned to this worker and read it again from the offset
        in the store (after its state was dropped: a fenced or failed commit)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        assigned = {tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic}
        self._settle()
        if partition not in assigned:
            self.dropped.discard(partition)
            return
        try:
            offset = self._load(partition)
        except Exception as exc:
            if not self.outage.waited(exc):
                raise
            self.dropped.add(partition)
            return
        start = OFFSET_BEGINNING if offset < 0 else offset
        self._consumer.seek(TopicPartition(self.topic, partition, start))
        log.info("partition %d reloaded from the store, reading from %s", partition, start)


def describe(partitions: Sequence[Any]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions) or "nothing"

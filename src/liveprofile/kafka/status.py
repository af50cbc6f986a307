"""How far behind a consumer group is: lag per partition, the group's members, the store's view.

The lag of a partition is its end offset (the broker's high watermark) minus the next offset to
apply. That offset is read from the store (the partition's checkpoint: exact) and from Kafka's
committed offsets (written after each batch for monitoring; they may trail the store by one
batch). Members are the group's consumers with the partitions each was assigned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec

from liveprofile.engine.state import Checkpoint
from liveprofile.kafka.broker import KafkaError
from liveprofile.kafka.partition import partition_scope, source_name
from liveprofile.kafka.producer import log
from liveprofile.learn import regression
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.stored import shared_learned
from liveprofile.redis.fence import STARTED_NAMESPACE
from liveprofile.redis.store import RedisStore
from liveprofile.store.layout import CONFIG, metrics_meta, model_meta, stored_config
from liveprofile.store.scoped import ScopedStore


@dataclass
class PartitionStatus:
    partition: int
    end_offset: int
    #: next offset to apply according to the store (None before its first commit)
    store_offset: int | None
    #: next offset according to Kafka's committed offsets (monitoring only)
    kafka_offset: int | None
    lag: int
    events: int = 0
    dead_letters: int = 0
    #: event time the partition's committed events reach (None before its first commit)
    watermark: float | None = None
    #: event time the batch its owner is applying now reaches, when beyond ``watermark`` (None:
    #: no batch in flight, or none announced; see :mod:`liveprofile.kafka.align`)
    in_flight_to: float | None = None


@dataclass
class MemberStatus:
    member_id: str
    client_id: str
    host: str
    partitions: list[int] = field(default_factory=list)


@dataclass
class KafkaStatus:
    topic: str
    group: str
    state: str
    partitions: list[PartitionStatus]
    members: list[MemberStatus]
    #: each task's prequential metrics over all partitions (see :func:`merged_metrics`)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def event_time_spread(self) -> float | None:
        """Seconds of event time between the partitions with events left that are furthest
        ahead and furthest behind (their committed watermarks; None: fewer than two such):
        how far apart the shared model's partitions run (``run.partition_skew``)."""
        marks = [p.watermark for p in self.partitions if p.lag and p.watermark is not None]
        return max(marks) - min(marks) if len(marks) > 1 else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lag": self.lag, "event_time_spread": self.event_time_spread}


def _checkpoint(store: RedisStore | None, topic: str, partition: int) -> Checkpoint | None:
    if store is None:
        return None
    blob = ScopedStore(store, partition_scope(topic, partition)).get_meta("checkpoint")
    return None if blob is None else msgspec.msgpack.decode(blob, type=Checkpoint)


def _announced(store: RedisStore | None, topic: str, partitions: list[int]) -> dict[int, float]:
    """The event time each partition's announced batch reaches (absent: none announced)."""
    if store is None or not partitions:
        return {}
    scopes = [partition_scope(topic, p) for p in partitions]
    values = store.read(STARTED_NAMESPACE, scopes)
    return {p: float(v) for p, v in zip(partitions, values, strict=True) if v is not None}


def merged_metrics(
    store: RedisStore, topic: str, partitions: list[int], tasks: list[str]
) -> dict[str, dict[str, Any]]:
    """Each task's prequential metrics over ``partitions``: the score bins, losses and
    predictions of every partition added up, so AUC and log loss are those of all of the
    topic's examples (:func:`liveprofile.learn.regression.merged_metrics`; drift detection
    stays per partition and is left out)."""
    out = {}
    views = [ScopedStore(store, partition_scope(topic, p)) for p in partitions]
    for task in tasks:
        blobs = [view.get_meta(metrics_meta(task)) for view in views]
        merged = regression.merged_metrics([b for b in blobs if b is not None]) or Prequential()
        out[task] = {k: v for k, v in merged.summary().items() if k != "drift"}
        if store.get_meta(model_meta(task)) is not None:
            out[task]["shared_model_learned"] = shared_learned(store, task)
    return out


def kafka_status(
    bootstrap: str, topic: str, group: str, store: RedisStore | None = None, timeout_s: float = 10
) -> KafkaStatus:
    """Lag per partition of ``topic`` for ``group`` and the group's members."""
    from confluent_kafka import Consumer, KafkaException
    from confluent_kafka import TopicPartition as TP
    from confluent_kafka.admin import AdminClient

    settings: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": log}
    admin = AdminClient(settings)
    try:
        meta = admin.list_topics(topic, timeout=timeout_s)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise KafkaError(f"no topic {topic!r} at {bootstrap}")
        numbers = sorted(meta.topics[topic].partitions)
        described = admin.describe_consumer_groups([group])[group].result()
        # a consumer of the group that never subscribes (so never joins) reads its committed
        # offsets; AdminClient.list_consumer_group_offsets crashes librdkafka 2.16 when the
        # group coordinator is still loading
        probe = Consumer({**settings, "group.id": group, "enable.auto.commit": False})
        try:
            tps = [TP(topic, p) for p in numbers]
            committed = {tp.partition: tp.offset for tp in probe.committed(tps, timeout_s)}
            ends = {p: probe.get_watermark_offsets(TP(topic, p), timeout_s)[1] for p in numbers}
        finally:
            probe.close()
    except KafkaException as exc:
        raise KafkaError(f"cannot read the status of {group!r} at {bootstrap}: {exc}") from None
    parts = []
    announced = _announced(store, topic, numbers)
    for p in numbers:
        ckpt = _checkpoint(store, topic, p)
        mark = None if ckpt is None or not math.isfinite(ckpt.watermark) else ckpt.watermark
        flying = announced.get(p)
        if flying is not None and mark is not None and flying <= mark:
            flying = None
        stored = None if ckpt is None else ckpt.offsets.get(source_name(topic, p))
        in_kafka = committed.get(p)
        kafka_offset = in_kafka if in_kafka is not None and in_kafka >= 0 else None
        done = stored if stored is not None else kafka_offset
        parts.append(
            PartitionStatus(
                partition=p,
                end_offset=ends[p],
                store_offset=stored,
                kafka_offset=kafka_offset,
                lag=max(0, ends[p] - (done or 0)),
                events=0 if ckpt is None else ckpt.events,
                dead_letters=0 if ckpt is None else ckpt.dead_letters,
                watermark=mark,
                in_flight_to=flying,
            )
        )
    members = [
        MemberStatus(
            m.member_id,
            m.client_id,
            m.host,
            sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic),
        )
        for m in described.members
    ]
    state = getattr(described.state, "name", str(described.state))
    tasks = {}
    if store is not None and store.get_meta(CONFIG) is not None:
        names = [t.name for t in stored_config(store).tasks]
        tasks = merged_metrics(store, topic, numbers, names)
    return KafkaStatus(topic, group, state, parts, members, tasks)

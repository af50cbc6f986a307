"""Appending events to a Kafka topic, keyed by user so that one user's events stay in order.

Every record's key is its ``user_id`` (its ``anonymous_id`` when it has none): Kafka puts equal
keys in one partition (``murmur2_random``, the partitioner of the Java clients, so other
producers agree), and a partition is read in order. The producer is idempotent with
``acks=all``: a retried send is written once, in its place. Records that fail validation go to
the dead-letter topic (:func:`dead_letter_topic`) as JSON ``{raw, reason, source, offset}``
instead of the event topic.

>>> dead_letter_topic("shop")
'shop.deadletters'
>>> record_key(b'{"user_id": 7, "event_id": "e"}'), record_key(b'{"anonymous_id": "a1"}')
(b'7', b'a1')
>>> record_key(b"not json") is None
True
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from liveprofile.errors import InvalidEvent
from liveprofile.events.deadletter import DeadLetter
from liveprofile.events.schema import EventParser
from liveprofile.kafka.broker import KafkaError

log = logging.getLogger("liveprofile")


def dead_letter_topic(topic: str) -> str:
    """The topic that receives the records of ``topic`` that fail validation."""
    return f"{topic}.deadletters"


class _UserOnly(msgspec.Struct):
    user_id: str | int | None = None
    anonymous_id: str | int | None = None


_keys = msgspec.json.Decoder(_UserOnly)


def record_key(raw: bytes) -> bytes | None:
    """The partitioning key of a raw JSON event: its user id, else its anonymous id."""
    try:
        rec = _keys.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    user = rec.user_id if rec.user_id is not None else rec.anonymous_id
    return None if user is None else str(user).encode("utf-8")


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """librdkafka settings of every producer here: idempotent, ``acks=all``, Java's partitioner."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "compression.type": "lz4",
        "logger": log,
        **extra,
    }


def ensure_topics(
    bootstrap: str, topics: dict[str, int], timeout_s: float = 30.0
) -> dict[str, int]:
    """Create the topics that do not exist yet, ``{name: partitions}`` (replication 1); returns
    the partition count of each of ``topics`` that existed already (it is not changed)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    settings: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": log}
    admin = AdminClient(settings)
    try:
        listed = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise KafkaError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    existing = {t: len(listed[t].partitions) for t in topics if t in listed}
    new = [NewTopic(t, n, 1) for t, n in topics.items() if t not in existing]
    if not new:
        return existing
    for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise KafkaError(f"cannot create topic {name}: {exc}") from None
    return existing


def partition_mismatch(topic: str, existing: int, asked: int) -> str | None:
    """The warning when ``topic`` exists with ``existing`` partitions, not the ``asked`` ones
    (None when they agree).

    >>> partition_mismatch("shop", 3, 3) is None
    True
    >>> print(partition_mismatch("shop", 1, 3))  # doctest: +ELLIPSIS
    topic 'shop' exists with 1 partition, not the 3 asked for: it keeps 1 ...
    """
    if existing == asked:
        return None
    plural = "" if existing == 1 else "s"
    return (
        f"topic {topic!r} exists with {existing} partition{plural}, not the {asked} asked for: "
        f"it keeps {existing} (a topic's partitions are set when it is created, e.g. by the "
        "broker's auto-creation with its num.partitions when a worker subscribed first); to "
        "have another count, create the topic before starting workers, or delete and recreate it"
    )


@dataclass
class PublishStats:
    """What :class:`KafkaPublisher` appended: events per partition and dead letters."""

    published: int = 0
    dead_letters: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)


class KafkaPublisher:
    """Appends raw JSON events to ``topic`` keyed by user; invalid ones to its dead-letter topic.

    A ``topic`` that exists keeps its partition count; when it differs from ``partitions`` the
    publisher logs a warning (also kept in :attr:`warning`).

    ``validate=False`` appends every record that has a user or anonymous id without parsing it
    (the workers dead-letter what is invalid); records without either still go to the
    dead-letter topic, since they have no partition of their own.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partitions: int = 4,
        validate: bool = True,
        source: str = "publish",
    ) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.dead_topic = dead_letter_topic(topic)
        existing = ensure_topics(bootstrap, {topic: partitions, self.dead_topic: 1})
        #: the topic's partition count (the existing one when it existed already)
        self.partitions = existing.get(topic, partitions)
        #: why the topic does not have the partitions asked for, or None
        self.warning = partition_mismatch(topic, self.partitions, partitions)
        if self.warning is not None:
            log.warning(self.warning)
        self.producer = Producer(producer_config(bootstrap))
        self.validate = validate
        self.source = source
        self.stats = PublishStats()
        self._parser = EventParser()
        self._errors: list[str] = []

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._errors.append(str(err))
        elif msg.topic() == self.topic:
            p = msg.partition()
            self.stats.per_partition[p] = self.stats.per_partition.get(p, 0) + 1

    def _produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=self._delivered)
                return
            except BufferError:  # the local queue is full: let deliveries drain it
                self.producer.poll(0.1)

    def append(self, raw: bytes, number: int = 0) -> bool:
        """Queue one raw JSON record; returns whether it went to the event topic."""
        raw = raw.strip()
        if not raw:
            return False
        key = record_key(raw)
        reason = None if key is not None else "record has neither user_id nor anonymous_id"
        if reason is None and self.validate:
            try:
                self._parser.parse_json(raw)
            except InvalidEvent as exc:
                reason = str(exc)
        if reason is not None:
            self.reject(raw.decode("utf-8", "replace"), reason, number)
            return False
        self._produce(self.topic, raw, key)
        self.stats.published += 1
        self.producer.poll(0)
        return True

    def reject(self, raw: str, reason: str, number: int = 0) -> None:
        """Queue a dead letter: the raw input and why it was refused."""
        letter = DeadLetter(raw, reason, self.source, number)
        self._produce(self.dead_topic, msgspec.json.encode(letter), None)
        self.stats.dead_letters += 1

    def extend(self, lines: Iterable[bytes]) -> PublishStats:
        """Queue every line (numbered from 1 in dead letters) and wait until all are written."""
        for number, line in enumerate(lines, 1):
            self.append(line, number)
        self.flush()
        return self.stats

    def flush(self, timeout_s: float = 300.0) -> None:
        """Wait until every queued record is acknowledged by the broker (``acks=all``)."""
        left = self.producer.flush(timeout_s)
        if left or self._errors:
            errors, self._errors = self._errors, []
            detail = errors[0] if errors else f"{left} records still queued"
            raise KafkaError(f"Kafka did not take every record ({len(errors)} failed): {detail}")

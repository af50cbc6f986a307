"""The HTTP collector's Kafka sink: each request's valid events appended to a topic before the
answer (keyed by user, as ``publish --kafka`` does), its rejected ones to the dead-letter topic.

>>> KafkaSinkSettings("127.0.0.1:9092", "shop").dead_letter_topic
'shop.deadletters'
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import msgspec

from liveprofile.errors import ConfigError, StoreError
from liveprofile.events.deadletter import DeadLetter
from liveprofile.kafka.producer import (
    dead_letter_topic,
    ensure_topics,
    log,
    partition_mismatch,
    producer_config,
    record_key,
)
from liveprofile.serving.sinks import SOURCE, Accepted, Rejected


@dataclass(frozen=True)
class KafkaSinkSettings:
    """Append to ``topic`` on the brokers ``bootstrap`` (created with ``partitions`` if new)."""

    bootstrap: str
    topic: str = "events"
    partitions: int = 4

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")

    @property
    def dead_letter_topic(self) -> str:
        return dead_letter_topic(self.topic)


class KafkaSink:
    """Produces a request's records and answers once the broker has acknowledged all of them
    (``acks=all``, idempotent producer); a background thread serves the delivery reports."""

    status = 200

    def __init__(self, settings: KafkaSinkSettings) -> None:
        self.settings = settings
        self._producer: Any = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="liveprofile-kafka", daemon=True)

    async def start(self) -> None:
        from confluent_kafka import Producer

        s = self.settings
        existing = await asyncio.to_thread(
            ensure_topics, s.bootstrap, {s.topic: s.partitions, s.dead_letter_topic: 1}
        )
        warning = partition_mismatch(s.topic, existing.get(s.topic, s.partitions), s.partitions)
        if warning is not None:
            log.warning(warning)
        self._producer = Producer(producer_config(s.bootstrap))
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def stop(self) -> None:
        self._stop.set()
        if self._poller.is_alive():
            await asyncio.to_thread(self._poller.join)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 30)

    def _send(self, topic: str, value: bytes, key: bytes | None) -> Future[None]:
        done: Future[None] = Future()

        def report(err: Any, _msg: Any) -> None:
            if err is None:
                done.set_result(None)
            else:
                done.set_exception(StoreError(f"Kafka refused a record: {err}"))

        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=report)
                return done
            except BufferError:  # the local queue is full until deliveries drain it
                self._producer.poll(0.05)

    async def submit(self, accepted: list[Accepted], rejected: list[Rejected]) -> None:
        if self._producer is None:
            raise StoreError("the Kafka sink is not started")
        topic = self.settings.topic
        sent = [
            self._send(topic, a.raw, record_key(a.raw) or a.event.user.encode()) for a in accepted
        ]
        for bad in rejected:
            letter = msgspec.json.encode(DeadLetter(bad.raw, bad.reason, SOURCE, 0))
            sent.append(self._send(self.settings.dead_letter_topic, letter, None))
        await asyncio.gather(*(asyncio.wrap_future(f) for f in sent))

    async def check(self) -> str | None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        settings: dict[str, Any] = {"bootstrap.servers": self.settings.bootstrap, "logger": log}
        try:
            meta = await asyncio.to_thread(AdminClient(settings).list_topics, timeout=2)
        except KafkaException as exc:
            return f"Kafka at {self.settings.bootstrap} is unreachable: {exc}"
        if not meta.brokers:
            return f"Kafka at {self.settings.bootstrap} has no broker up"
        return None

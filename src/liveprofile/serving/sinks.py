"""Where the collector puts what it accepts: an embedded store here; Redis partition streams
(:mod:`liveprofile.redis.sink`) or Kafka topics (:mod:`liveprofile.kafka.sink`).

A sink receives the validated events of one request (with their raw JSON) and the rejected
records with their reasons. The Redis and Kafka sinks append both before the request is
answered; :class:`EmbeddedSink` queues them for a background thread that applies them to a
SQLite store in committed batches, the way the local runner does, and drains the queue on
shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import LocalRunner
from liveprofile.errors import StoreError
from liveprofile.events.deadletter import DeadLetter
from liveprofile.events.schema import Event
from liveprofile.events.sources import Batch
from liveprofile.store import open_store
from liveprofile.store.layout import check_config, default_changes, default_dead_letters

log = logging.getLogger(__name__)

#: the source name under which HTTP input is counted in the store's offsets and dead letters
SOURCE = "http"


@dataclass(frozen=True)
class Accepted:
    """A valid event and the raw JSON it came from."""

    event: Event
    raw: bytes


@dataclass(frozen=True)
class Rejected:
    """A record that failed validation: its raw JSON (as text) and the reason."""

    raw: str
    reason: str


@dataclass(frozen=True)
class EmbeddedSinkSettings:
    """Apply events to a SQLite store in-process, committing every ``commit_every`` records
    or ``commit_interval`` seconds; dead letters go to a JSONL file beside the store."""

    store: Path
    config: PipelineConfig = field(default_factory=PipelineConfig)
    dead_letters: Path | None = None
    commit_every: int = 1000
    commit_interval: float = 0.5
    #: requests waiting for the background thread before the collector answers 503
    queue_size: int = 1024


class Sink(Protocol):
    """What the collector needs from a sink."""

    #: HTTP status of a successful POST: 200 when stored, 202 when queued
    status: int

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, accepted: list[Accepted], rejected: list[Rejected]) -> None: ...

    async def check(self) -> str | None:
        """None when the sink is reachable, else what is wrong."""


_STOP = object()


class EmbeddedSink:
    """Queues requests for a thread that commits them to the store in batches."""

    status = 202

    def __init__(self, settings: EmbeddedSinkSettings) -> None:
        self.settings = settings
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue_size)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="liveprofile-embedded", daemon=True)

    async def start(self) -> None:
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._error is not None:
            raise self._error

    async def stop(self) -> None:
        if self._thread.is_alive():
            await asyncio.to_thread(self._queue.put, _STOP)
            await asyncio.to_thread(self._thread.join)

    async def submit(self, accepted: list[Accepted], rejected: list[Rejected]) -> None:
        problem = await self.check()
        if problem is not None:
            raise StoreError(problem)
        try:
            self._queue.put_nowait(([a.event for a in accepted], rejected))
        except queue.Full:
            raise StoreError(
                "the collector's queue is full: the store cannot keep up; retry later"
            ) from None

    async def check(self) -> str | None:
        if self._error is not None:
            return f"the embedded store {self.settings.store} failed: {self._error}"
        if not self._thread.is_alive():
            return "the embedded store is not running"
        return None

    def _run(self) -> None:
        s = self.settings
        try:
            store = open_store(str(s.store))
            store.setup()
            check_config(store, s.config)
            runner = LocalRunner(
                s.config,
                store,
                s.dead_letters or default_dead_letters(s.store),
                changes=default_changes(s.store),
            )
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(runner)
        except BaseException as exc:
            log.exception("embedded store stopped")
            self._error = exc
        finally:
            runner.close()

    def _loop(self, runner: LocalRunner) -> None:
        events: list[Event] = []
        rejected: list[Rejected] = []
        deadline = 0.0
        stopping = False
        while not stopping:
            pending = bool(events or rejected)
            timeout = max(0.0, deadline - time.monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                stopping = True
            elif isinstance(item, tuple):
                if not pending:
                    deadline = time.monotonic() + self.settings.commit_interval
                events.extend(item[0])
                rejected.extend(item[1])
            size = len(events) + len(rejected)
            due = stopping or item is None or time.monotonic() >= deadline
            if size and (due or size >= self.settings.commit_every):
                self._commit(runner, events, rejected)
                events, rejected = [], []

    @staticmethod
    def _commit(runner: LocalRunner, events: list[Event], rejected: list[Rejected]) -> None:
        base = runner.state.checkpoint.offsets.get(SOURCE, 0)
        letters = [DeadLetter(r.raw, r.reason, SOURCE, base + i) for i, r in enumerate(rejected)]
        batch = Batch(events, letters, base + len(events) + len(letters))
        runner.process(SOURCE, batch)

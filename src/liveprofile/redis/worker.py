"""The Redis runner: consumes partition streams through a consumer group into a Redis store.

Per batch, read from one partition stream, the worker runs the same core and commit logic as the
local runner (:func:`~liveprofile.engine.local.apply_batch`): profiles, items, models, pending
examples, the batch's dead letters (namespace ``deadletter`` and stream ``{prefix}:deadletters``)
and segment changes, the stream's offset, the acknowledgement of the batch's entries (``XACK``)
and, with ``trim``, the trim of the stream (:data:`~liveprofile.redis.streams.TRIM_SCRIPT`) go
into one ``MULTI``/``EXEC``. A worker killed at any point re-reads its unacknowledged entries on
restart; those at or below the committed offset are acknowledged without being applied again
(only while the store still holds the commit that applied them, :mod:`liveprofile.redis.acks`),
so the store ends as after an uninterrupted run. A worker restarted under another consumer name
first takes over every entry pending in the group on its streams (it holds their writer lease:
nobody else may be applying them), and a stream whose offsets another scope commits is refused.

When Redis is unreachable the worker logs it, waits (exponential backoff, capped) and reloads its
state from the store before going on, since a batch in flight may or may not have been committed
and a server that restarted may have lost its last commits; it drops its core too (the compiled
step's arrays), keeping nothing from before, as a restarted worker. It then reads its
unacknowledged entries first, so entries are always applied in stream order. A store found older
than the worker's state without any error seen (a connection re-made silently) is caught before
the next commit or acknowledgement, by the scope's fence or checkpoint, and reloaded the same way.

Several workers may share a prefix, each owning some partitions under a ``scope`` of its own
(:class:`~liveprofile.store.scoped.ScopedStore`): profiles are shared, while each scope keeps its
checkpoint, item statistics, pending examples and segments. With ``run.shared_model`` (the
default) scoped workers train one model per task together, as Kafka workers do
(:mod:`liveprofile.kafka.shared_model`): each batch reads back the coordinates it touches and
merges its changes in its own commit, fenced per scope (:mod:`liveprofile.redis.fence`; the
store is a :class:`~liveprofile.redis.fence.FencedRedisStore`). A worker without a scope
keeps its model as one blob, as a replay does. Every worker's commits are fenced (a worker given
a plain :class:`RedisStore` commits through a fenced store of its own on the same server and
prefix), a worker without a scope by the key ``{prefix}:fence:``: a worker that stalled past
its lease, or whose consumer name a second process took over, cannot commit on the state it
loaded once another has moved it on.

Durability: run Redis with ``appendonly yes``. With ``appendfsync always`` nothing acknowledged
is lost. With ``appendfsync everysec`` a crash of the machine (or of a server whose fsync lags)
loses up to about a second of writes, a tail of whole commands; each batch's ``MULTI``/``EXEC``
survives whole or not at all, so the store is as after its last surviving commit, and the
worker, reconnected or restarted, reloads its state and reads again from the offsets in the
store: nothing is applied twice or lost relative to those offsets (tests/test_redis_everysec.py).
Entries appended to the event streams in the lost second are lost. The dead-letter and
segment-change entries of the lost commits are appended again when they are replayed, with the
same keys, so a reader that read them before the crash drops them
(:mod:`liveprofile.redis.entrykey`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from liveprofile.config import PipelineConfig
from liveprofile.engine.core import Core
from liveprofile.engine.gc_tuning import fewer_collections
from liveprofile.engine.local import RunStats, apply_batch
from liveprofile.engine.screen import screen
from liveprofile.engine.state import PipelineState
from liveprofile.errors import StateVersionError, StoreLocked
from liveprofile.events.sources import Batch
from liveprofile.kafka.shared_model import share_models
from liveprofile.profile.segments import SegmentChange
from liveprofile.redis.acks import ack_if_committed, align_fence
from liveprofile.redis.changes import change_stream, stage_changes, stage_scrub
from liveprofile.redis.entrykey import entry_key, stage_dead_letters
from liveprofile.redis.fence import FencedOut, FencedRedisStore
from liveprofile.redis.outage import short as _short
from liveprofile.redis.outage import unreachable as _unreachable
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import (
    StreamBatch,
    StreamReader,
    format_offset,
    stream_key,
)
from liveprofile.redis.workers import check_owner
from liveprofile.store.base import Store
from liveprofile.store.layout import (
    CHECKPOINT,
    DEAD_LETTERS,
    check_config,
    decode_checkpoint,
)
from liveprofile.store.lock import WriterLock, writer_lock
from liveprofile.store.scoped import ScopedStore

log = logging.getLogger("liveprofile")
#: kept for callers of this module; the namespace is :data:`liveprofile.store.layout.DEAD_LETTERS`
DEAD_LETTER_NAMESPACE = DEAD_LETTERS


class _StaleState(Exception):
    """The store's checkpoint is not the one this worker's state continues from."""


@dataclass(frozen=True)
class WorkerOptions:
    """What a :class:`RedisWorker` reads and how: the streams ``{prefix}:events:{p}`` of
    ``partitions``, as ``consumer`` of consumer ``group``.

    ``batch_size`` entries per commit at most; a read waits ``block_ms`` for new entries;
    entries another consumer left unacknowledged for ``claim_idle_ms`` are taken over; with
    ``trim`` each commit deletes the entries before its last that every group is done with;
    ``scope`` keeps this worker's state apart from other workers on the prefix
    (:class:`~liveprofile.store.scoped.ScopedStore`); a lost connection is retried with
    backoff up to ``max_backoff_s``.

    >>> WorkerOptions("shop", [0, 1], batch_size=500).consumer
    'worker-1'
    """

    prefix: str
    partitions: Sequence[int]
    group: str = "liveprofile"
    consumer: str = "worker-1"
    batch_size: int = 1000
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    trim: bool = False
    scope: str | None = None
    max_backoff_s: float = 5.0


class RedisWorker:
    """Consumes the partition streams of ``options`` into ``store``, exactly once in effect.

    ``client`` reads the streams; ``store`` holds the state. The worker turns off redis-py's own
    retries on both clients and retries itself, reloading its state from the store each time.
    ``run`` returns after ``max_idle_polls`` consecutive empty reads, or when ``stop`` is set.
    Given a plain :class:`RedisStore`, the worker commits through a fenced store of its own on
    the same server and prefix (:attr:`store`), closed when ``run`` returns.
    """

    def __init__(
        self,
        config: PipelineConfig,
        store: RedisStore,
        client: redis.Redis,
        options: WorkerOptions,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not options.partitions:
            raise ValueError("a worker needs at least one partition")
        self.config = config
        #: whether :attr:`store` is the worker's own, made from a plain RedisStore
        self._owned = type(store) is RedisStore
        if self._owned:
            store = FencedRedisStore(store.url, prefix=store.prefix)
        if not isinstance(store, FencedRedisStore):
            raise TypeError(f"a RedisWorker needs a FencedRedisStore, not {type(store).__name__}")
        self.store: FencedRedisStore = store
        self.options = options
        scope, prefix = options.scope, options.prefix
        #: where this worker's state lives: the whole store, or its scope of a shared one
        self.view: Store = store if scope is None else ScopedStore(store, scope)
        #: one model per task shared with other scoped workers (``run.shared_model``)
        self.shared = scope is not None and config.run.shared_model
        #: the scope of the fence: the worker's, or "" without one (key ``{prefix}:fence:``)
        self.fence_scope = scope or ""
        #: each task's shared model as this worker last read it
        self.models: dict[str, Any] = {}
        client.set_retry(_no_retry())
        self.client = client
        self.core = Core(config)
        self.batch_size = options.batch_size
        self.block_ms = options.block_ms
        self.max_backoff_s = options.max_backoff_s
        self.dead_letter_stream = f"{prefix}:deadletters"
        self.change_stream = change_stream(prefix)
        self.trim = options.trim
        self.readers = [
            StreamReader(
                client,
                stream_key(prefix, p),
                options.group,
                options.consumer,
                claim_idle_ms=options.claim_idle_ms,
            )
            for p in options.partitions
        ]
        self.state: PipelineState | None = None
        #: the stream and last entry of the batch being applied (its entries' keys)
        self._made_at = ("", 0, 0)
        self.consumer = options.consumer
        self.lock: WriterLock | None = None
        self._sleep = sleep
        self._clock = clock

    def run(
        self, max_idle_polls: int | None = None, stop: threading.Event | None = None
    ) -> RunStats:
        """Consume until ``max_idle_polls`` empty reads in a row (None: forever) or ``stop``."""
        try:
            with fewer_collections():
                return self._consume(max_idle_polls, stop)
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
            if self._owned:
                self.store.close()

    def _consume(self, max_idle_polls: int | None, stop: threading.Event | None) -> RunStats:
        stats = RunStats()
        started = self._clock()
        idle = 0
        backoff = 0.0
        # The partition read next is a function of the committed state: the commit count, plus
        # the partitions found empty since the last commit. A restart therefore reads the same
        # partitions in the same order as an uninterrupted run, and makes the same batches.
        passed = 0
        while not (stop is not None and stop.is_set()):
            if max_idle_polls is not None and idle >= max_idle_polls:
                break
            try:
                state = self._ready()
                reader = self.readers[(state.checkpoint.seq + passed) % len(self.readers)]
                committed = state.checkpoint.offsets.get(reader.stream, 0)
                batch = reader.read(self.batch_size, committed, self.block_ms)
                if batch is None:
                    idle += 1
                    passed += 1
                else:
                    idle = 0
                    if self._apply(state, reader, batch, stats):
                        passed = 0
                    # else: entries committed before a restart, only acknowledged now; the
                    # same partition is read again, as the uninterrupted run would have
                backoff = 0.0
            except _StaleState:
                log.warning("store or stream moved under this worker; reloading its state")
                self._forget()
                passed = 0
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # a server that restarted without its last writes may have lost the group
                # itself: made again at the next reload, which reads from the store's offsets
                log.warning("consumer group gone (%s); reloading", _short(exc))
                self._forget()
                passed = 0
            except Exception as exc:
                if not _unreachable(exc):
                    raise
                backoff = min(self.max_backoff_s, backoff * 2 if backoff else 0.1)
                log.warning(
                    "redis unreachable at %s (%s); retrying in %.1f s",
                    self.store.url,
                    _short(exc),
                    backoff,
                )
                self._forget()
                passed = 0
                self._sleep(backoff)
        stats.seconds = self._clock() - started
        return stats

    def _ready(self) -> PipelineState:
        """The state to continue from, loaded (again) from the store when needed."""
        if self.lock is not None and self.lock.lost:
            raise StoreLocked("this worker's lease on the store was taken over: stopping")
        if self.state is None:
            self.client.ping()  # fails fast, unlike the store's client with its own retries
            if self.lock is None:
                self.lock = writer_lock(self.view, self.consumer)
            self.store.setup()
            self.store.client.set_retry(_no_retry())
            check_config(self.view, self.config)
            check_owner(self.store, self.options.scope, [r.stream for r in self.readers])
            state = PipelineState.load(self.view, self.config)
            if self.shared:
                self._share(state)
            else:
                self._align(state)
            for reader in self.readers:
                reader.ensure_group()
                for other, n in reader.take_over().items():
                    log.info("%s: took over %d entries left pending by %s", reader.stream, n, other)
                reader.reset()
            self.state = state
        return self.state

    def _share(self, state: PipelineState) -> None:
        """Put the store's shared models in ``state`` and check the scope's fence."""
        assert isinstance(self.view, ScopedStore)
        share_models(self.store, self.view, state, self.models)
        fence = self.store.fence_value(self.view.scope)
        if fence != state.checkpoint.seq:
            raise StateVersionError(
                f"the fence of scope {self.view.scope} is at {fence}, its checkpoint at "
                f"{state.checkpoint.seq}: the scope was written without a shared model; "
                "replay into a new prefix, or run with run.shared_model = false"
            )

    def _align(self, state: PipelineState) -> None:
        """Start the fence where the checkpoint just loaded is (see
        :func:`~liveprofile.redis.acks.align_fence`); the state is stale if it moved since."""
        blob = self.view.get_meta(CHECKPOINT)
        seq = state.checkpoint.seq
        if (0 if blob is None else decode_checkpoint(blob).seq) != seq:
            raise _StaleState
        key = self.store.fence_key(self.fence_scope)
        meta_key = f"{self.store.prefix}:meta"
        if not align_fence(self.client, meta_key, self.options.scope, blob, key, seq):
            raise _StaleState

    def _forget(self) -> None:
        """Drop the in-memory state: a batch may have failed between step and commit, and the
        store may have lost its last commits (a Redis without durable writes that restarted).

        The core goes too: the compiled step keeps arrays between batches (item statistics,
        the items a batch touched, resident rows, pending examples) that a batch failing
        half-way leaves ahead of any state; the items it had marked touched would otherwise be
        written, with their statistics from commits the store lost, by the next batch. A new
        core holds nothing, as a restarted worker's."""
        self.state = None
        self.core = Core(self.config)
        self.store.close()

    def _apply(
        self, state: PipelineState, reader: StreamReader, sb: StreamBatch, stats: RunStats
    ) -> bool:
        """Commit a batch read from ``reader`` and acknowledge it; whether anything was
        committed (False when every entry had been applied before).

        A batch's entries are acknowledged in its commit (one ``MULTI``); entries applied by
        an earlier commit only if the store still holds it (:mod:`liveprofile.redis.acks`)."""
        fresh = bool(sb.events or sb.dead_letters)
        if not fresh:
            self._ack_applied(state, reader, sb)
        else:
            self._check_follows(state, reader, sb)
            batch = Batch(sb.events, list(sb.dead_letters), sb.offset, positions=sb.positions)
            screen(self.core, state, self.view, sb.stream, batch, time.time())
            screened = batch.dead_letters[len(sb.dead_letters) :]
            sb.dead_letters.extend(screened)
            # keyed by the entry of the event, as a record that does not parse
            sb.dead_letter_ids.extend(format_offset(d.offset) for d in screened)
            letters, ids = sb.dead_letters, sb.dead_letter_ids
            dead_rows = stage_dead_letters(self.store, self.dead_letter_stream, letters, ids)
            extra = {DEAD_LETTER_NAMESPACE: dead_rows} if dead_rows else None
            self.store.stage_ack(sb.stream, reader.group, sb.ids)
            if self.trim:  # the batch's entries but its last, once every group is done
                self.store.stage_trim(sb.stream, format_offset(sb.offset))
            self._made_at = (sb.stream, sb.offset, sb.first)
            try:
                with self.store.fenced_by(self.fence_scope, state.checkpoint.seq):
                    apply_batch(
                        self.core, state, self.view, sb.stream, batch, stats, extra, self._emit
                    )
            except FencedOut:
                self._forget()
                raise _StaleState from None
            except BaseException:
                self._forget()  # the state ran ahead of the store
                raise
        return fresh

    def _emit(self, changes: Sequence[SegmentChange], erased: set[str]) -> None:
        if erased:
            stage_scrub(self.store, self.change_stream, erased)
        source, end, first = self._made_at
        keys = [entry_key(source, end, k) for k in range(len(changes))]
        stage_changes(self.store, self.change_stream, changes, keys, format_offset(first))

    def _ack_applied(self, state: PipelineState, reader: StreamReader, sb: StreamBatch) -> None:
        """Acknowledge entries applied by an earlier commit (read again after a restart), if
        the store still holds this worker's last commit; else the state is stale."""
        blob = self.view.get_meta(CHECKPOINT)
        if blob is None or decode_checkpoint(blob).seq != state.checkpoint.seq:
            raise _StaleState
        meta_key = f"{self.store.prefix}:meta"
        scope, group = self.options.scope, reader.group
        if not ack_if_committed(self.client, meta_key, scope, blob, sb.stream, group, sb.ids):
            raise _StaleState

    def _check_follows(self, state: PipelineState, reader: StreamReader, sb: StreamBatch) -> None:
        """Guard against a batch that skips entries another reader was delivered
        (:meth:`StreamReader.skips`): its commit would follow the checkpoint (a store that lost
        commits behind this worker's back is caught at the fence), and the entries skipped
        would count as applied. Reloaded, the worker reads them first."""
        if reader.skips(state.checkpoint.offsets.get(sb.stream, 0), sb.first):
            raise _StaleState


def _no_retry() -> Retry:
    """No silent retries inside redis-py: a read retried on a new connection may skip entries
    delivered on the broken one, and a reconnect must make the worker reload its state."""
    return Retry(NoBackoff(), 0)

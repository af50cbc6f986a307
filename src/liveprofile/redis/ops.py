"""Operating the Redis path: how far behind the workers are, and what to do with dead letters.

:func:`stream_status` reads, for every partition stream of a prefix, its length, last entry id,
the consumer group's lag and pending entries, and from the store the committed checkpoint
(events, duplicates, dead letters, watermark, offset per stream) with a throughput sample.
:func:`list_dead_letters` lists the rows of the store's ``deadletter`` namespace, and
:func:`redrive` appends dead letters (as they were, or corrected) to the partition streams again
and deletes their rows only once the entries are in the streams.

Dead-letter rows are keyed ``{stream}:{entry id}``, the entry that was rejected; their values
are :class:`~liveprofile.events.deadletter.DeadLetter` encoded as JSON by msgspec.

>>> format_offset((1700000000000 << 22) + 5)
'1700000000000-5'
>>> iso_time(0.0), iso_time(float("-inf"))
('1970-01-01T00:00:00+00:00', None)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import redis

from liveprofile.errors import LiveprofileError, SourceError, StoreError
from liveprofile.events.deadletter import DeadLetter
from liveprofile.redis.store import RedisStore, reply
from liveprofile.redis.streams import format_offset, publish
from liveprofile.redis.workers import WorkerStatus, shared_tasks, worker_statuses
from liveprofile.store.base import Store
from liveprofile.store.layout import (
    CHECKPOINT,
    DEAD_LETTERS,
    Checkpoint,
    decode_checkpoint,
    merge_checkpoints,
)
from liveprofile.store.scoped import ScopedStore, registered_scopes

#: dead letters re-driven per round trip: published together, then deleted together
REDRIVE_CHUNK = 500
#: pending entries counted into a stream's store lag at most (a few batches' worth)
MAX_PENDING_COUNTED = 100_000


def iso_time(ts: float) -> str | None:
    """Epoch seconds as ISO 8601 in UTC; None for the watermark of an empty store."""
    if not math.isfinite(ts):
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass
class StreamStatus:
    """One partition stream and the consumer group reading it."""

    stream: str
    partition: int
    length: int
    last_entry_id: str | None
    #: False before a worker has created the group; then every entry counts as lag
    group_exists: bool
    #: entries not yet delivered to the group
    lag: int
    #: entries delivered but not yet acknowledged
    pending: int
    pending_per_consumer: dict[str, int] = field(default_factory=dict)
    last_delivered_id: str | None = None
    #: the store's committed offset for this stream, as an entry id
    committed_id: str | None = None
    #: entries after the committed one: not applied yet (read or not)
    store_lag: int = 0
    #: the scope whose checkpoint commits this stream (None: unscoped, or none yet)
    owner: str | None = None
    #: ms since each consumer of the group last read (Redis' ``idle``)
    consumer_idle_ms: dict[str, int] = field(default_factory=dict)


@dataclass
class StoreStatus:
    """The committed checkpoint of the store under a prefix, and one throughput sample."""

    events: int
    duplicates: int
    dead_letters: int
    watermark: str | None
    offsets: dict[str, str]
    dead_letters_stored: int
    checkpoint_seq: int
    events_per_s: float | None


@dataclass
class Status:
    """What ``liveprofile status`` reports."""

    prefix: str
    group: str
    streams: list[StreamStatus]
    store: StoreStatus
    #: the prefix's writers, live or not (see :mod:`liveprofile.redis.workers`)
    workers: list[WorkerStatus] = field(default_factory=list)
    #: each task's metrics over the scopes, and its shared model's examples learned
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def partition_streams(client: redis.Redis, prefix: str) -> list[tuple[int, str]]:
    """The partition streams ``{prefix}:events:{p}`` that exist, by partition number."""
    found: list[tuple[int, str]] = []
    for key in client.scan_iter(match=f"{prefix}:events:*", count=1000, _type="stream"):
        name = _text(key)
        tail = name[len(f"{prefix}:events:") :]
        if tail.isdigit():
            found.append((int(tail), name))
    return sorted(found)


def _lag(client: redis.Redis, stream: str, info: dict[str, Any], length: int) -> int:
    """The group's lag from XINFO GROUPS, or counted past ``last-delivered-id`` when Redis
    cannot tell (older servers, or entries deleted from the middle of the stream)."""
    lag = info.get("lag")
    if lag is not None:
        return int(lag)
    last = _text(info.get("last-delivered-id", "0-0"))
    if last == "0-0":
        return length
    return _count_after(client, stream, last)


def _count_after(client: redis.Redis, stream: str, last: str) -> int:
    """Entries of ``stream`` after the entry id ``last``."""
    count, start = 0, f"({last}"
    while True:
        entries = cast(list[Any], client.xrange(stream, min=start, max="+", count=10_000))
        if not entries:
            return count
        count += len(entries)
        start = f"({_text(entries[-1][0])}"


def _stream_status(
    client: redis.Redis, partition: int, stream: str, group: str, committed: int | None
) -> StreamStatus:
    info: dict[str, Any] = reply(client.xinfo_stream(stream))
    length = int(info["length"])
    last = info.get("last-generated-id")
    status = StreamStatus(
        stream=stream,
        partition=partition,
        length=length,
        last_entry_id=None if last is None or _text(last) == "0-0" else _text(last),
        group_exists=False,
        lag=length,
        pending=0,
        committed_id=None if committed is None else format_offset(committed),
    )
    groups: list[dict[str, Any]] = reply(client.xinfo_groups(stream))
    mine = [g for g in groups if _text(g["name"]) == group]
    if mine:
        status.group_exists = True
        status.last_delivered_id = _text(mine[0].get("last-delivered-id", "0-0"))
        status.lag = _lag(client, stream, mine[0], length)
        summary: dict[str, Any] = reply(client.xpending(stream, group))
        status.pending = int(summary["pending"])
        status.pending_per_consumer = {
            _text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []
        }
        consumers: list[dict[str, Any]] = reply(client.xinfo_consumers(stream, group))
        status.consumer_idle_ms = {_text(c["name"]): int(c["idle"]) for c in consumers}
    status.store_lag = _store_lag(client, status, group)
    return status


def _store_lag(client: redis.Redis, status: StreamStatus, group: str) -> int:
    """Entries after the store's committed one: those not delivered to the group yet, and those
    delivered after it (pending: acknowledged only once committed)."""
    if status.committed_id is None:
        return status.length
    if not status.group_exists:
        return _count_after(client, status.stream, status.committed_id)
    later: Any = client.xpending_range(
        status.stream, group, f"({status.committed_id}", "+", MAX_PENDING_COUNTED
    )
    return status.lag + len(later)


def read_checkpoint(store: RedisStore, scopes: Sequence[str] = ()) -> Checkpoint:
    """The store's committed checkpoint (an empty one before the first commit); with
    ``scopes``, the workers' checkpoints of those scopes added up (offsets side by side)."""
    views: list[Store] = [ScopedStore(store, s) for s in scopes] if scopes else [store]
    blobs = [view.get_meta(CHECKPOINT) for view in views]
    return merge_checkpoints(decode_checkpoint(b) for b in blobs if b is not None)


def stream_status(
    client: redis.Redis,
    store: RedisStore,
    prefix: str,
    *,
    group: str = "liveprofile",
    scopes: Sequence[str] = (),
    sample_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Status:
    """The state of every partition stream of ``prefix`` and of the store beside them.

    Throughput is the growth of the committed event count over ``sample_seconds`` (the
    checkpoint is read before and after); ``sample_seconds <= 0`` skips it (None). Without
    ``scopes``, every scope that committed to the prefix counts (none: the unscoped worker).
    """
    try:
        scopes = list(scopes) or sorted(registered_scopes(store))
        before = read_checkpoint(store, scopes)
        started = clock()
        if sample_seconds > 0:
            sleep(sample_seconds)
        after = read_checkpoint(store, scopes)
        elapsed = clock() - started
        rate = None
        if sample_seconds > 0 and elapsed > 0:
            rate = max(0, after.events - before.events) / elapsed
        streams = [
            _stream_status(client, p, name, group, after.offsets.get(name))
            for p, name in partition_streams(client, prefix)
        ]
        workers = worker_statuses(client, store, scopes)
        for s in streams:
            s.owner = next((w.scope for w in workers if s.stream in w.streams), None)
        tasks = shared_tasks(store, scopes)
    except redis.RedisError as exc:
        raise StoreError(f"cannot read the status of {prefix!r} at {store.url}: {exc}") from None
    return Status(
        prefix=prefix,
        group=group,
        streams=streams,
        store=StoreStatus(
            events=after.events,
            duplicates=after.duplicates,
            dead_letters=after.dead_letters,
            watermark=iso_time(after.watermark),
            offsets={k: format_offset(v) for k, v in sorted(after.offsets.items())},
            dead_letters_stored=store.count(DEAD_LETTERS),
            checkpoint_seq=after.seq,
            events_per_s=rate,
        ),
        workers=workers,
        tasks=tasks,
    )


def list_dead_letters(store: RedisStore, limit: int | None = None) -> list[tuple[str, DeadLetter]]:
    """The stored dead letters as ``(key, letter)`` sorted by key, at most ``limit`` of them."""
    decoder = msgspec.json.Decoder(DeadLetter)
    out: list[tuple[str, DeadLetter]] = []
    for key, value in store.scan(DEAD_LETTERS):
        if limit is not None and len(out) >= limit:
            break
        out.append((key, decoder.decode(value)))
    return out


@dataclass
class RedriveResult:
    """What :func:`redrive` did: entries appended per partition and dead-letter rows deleted."""

    published: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)


class RedriveError(LiveprofileError):
    """The dead letters to re-drive, or their corrections, do not match; nothing was changed."""

    exit_code = 65  # EX_DATAERR
    http_status = 422


def _plan(
    store: RedisStore, keys: Sequence[str] | None, fixed: Sequence[bytes] | None
) -> list[tuple[str, bytes]]:
    """``(dead-letter key, line to publish)`` for each dead letter to re-drive, checked first."""
    decoder = msgspec.json.Decoder(DeadLetter)
    if keys is None:
        if fixed is not None:
            raise RedriveError("corrected lines need the --key of each dead letter they replace")
        rows = list(store.scan(DEAD_LETTERS))
    else:
        values = store.read(DEAD_LETTERS, list(keys))
        missing = [k for k, v in zip(keys, values, strict=True) if v is None]
        if missing:
            raise RedriveError(f"no dead letter stored under {', '.join(missing[:5])}")
        rows = [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
    if len({k for k, _ in rows}) != len(rows):
        raise RedriveError("a dead-letter key is given more than once")
    if fixed is not None and len(fixed) != len(rows):
        raise RedriveError(
            f"{len(fixed)} corrected lines for {len(rows)} dead letters: give one line per --key"
        )
    plan: list[tuple[str, bytes]] = []
    for i, (key, value) in enumerate(rows):
        line = fixed[i] if fixed is not None else decoder.decode(value).raw.encode("utf-8")
        if not line.strip():
            raise RedriveError(f"dead letter {key} has no input to re-drive; give a fixed line")
        plan.append((key, line.strip()))
    return plan


def redrive(
    client: redis.Redis,
    store: RedisStore,
    prefix: str,
    partitions: int | None = None,
    *,
    keys: Sequence[str] | None = None,
    fixed: Iterable[bytes] | None = None,
) -> RedriveResult:
    """Append dead letters to the partition streams again, then delete their rows.

    ``keys`` chooses the dead letters (default: all stored); ``fixed`` gives one corrected line
    per key, in order, to publish instead of the raw input. ``partitions`` defaults to the number
    of partition streams that exist (at least 1); use the count the events were published with.
    Each chunk of dead letters is deleted only after its ``XADD``s succeeded, so a failure leaves
    the rest stored; re-driving them again can repeat an entry, which the worker's
    de-duplication window drops if its ``event_id`` was applied already.
    """
    corrections = None if fixed is None else [line for line in fixed if line.strip()]
    plan = _plan(store, keys, corrections)
    if partitions is None:
        found = partition_streams(client, prefix)
        partitions = max((p for p, _ in found), default=0) + 1
    if partitions < 1:
        raise SourceError(f"partitions must be >= 1, got {partitions}")
    result = RedriveResult()
    for lo in range(0, len(plan), REDRIVE_CHUNK):
        chunk = plan[lo : lo + REDRIVE_CHUNK]
        try:
            stats = publish(client, prefix, partitions, [line for _, line in chunk])
        except redis.RedisError as exc:
            raise StoreError(
                f"cannot re-drive to {prefix!r}: {exc}; {len(result.deleted)} dead letters were "
                "re-driven and deleted, the rest are still stored"
            ) from None
        result.published += stats.published
        for p, n in stats.per_partition.items():
            result.per_partition[p] = result.per_partition.get(p, 0) + n
        store.commit({DEAD_LETTERS: {key: None for key, _ in chunk}}, {})
        result.deleted.extend(key for key, _ in chunk)
    return result

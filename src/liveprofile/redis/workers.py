"""Who writes a Redis prefix: its workers (one per scope, or one without), which are alive, and
the one model per task they train together.

A worker's checkpoint names the partition streams it commits (their offsets), and while it runs
it holds the writer lease ``{prefix}:writer[:scope]`` (:mod:`liveprofile.redis.lease`), whose
value names its consumer and process and which expires :data:`~liveprofile.store.lock.LEASE_S`
seconds after the worker's last renewal: a worker with a lease is alive (or died less than that
ago); :func:`check_owner` refuses a worker the streams another one commits.
:func:`worker_statuses` puts both together for ``liveprofile status``, and
:func:`shared_tasks` adds each task's metrics over the scopes and the examples its shared model
has learned.

>>> holder_of(b"w0 host-a:4242 1f2e3d4c")
('w0', 'host-a:4242')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from liveprofile.errors import ConfigError
from liveprofile.learn import regression
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.stored import shared_learned
from liveprofile.redis.store import RedisStore
from liveprofile.store.base import Store
from liveprofile.store.layout import (
    CHECKPOINT,
    CONFIG,
    decode_checkpoint,
    metrics_meta,
    model_meta,
    stored_config,
)
from liveprofile.store.scoped import ScopedStore, registered_scopes


@dataclass
class WorkerStatus:
    """One writer of a prefix: its scope (None: the worker without ``--scope``), the streams
    its checkpoint commits, its counters, and its lease when it holds one."""

    scope: str | None
    streams: list[str] = field(default_factory=list)
    #: whether the writer lease is held: the worker runs (or died less than a lease ago)
    live: bool = False
    consumer: str | None = None
    #: ``host:pid`` of the process holding the lease
    process: str | None = None
    lease_expires_ms: int | None = None
    commits: int = 0
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0


def holder_of(token: bytes | str) -> tuple[str, str | None]:
    """The consumer and ``host:pid`` named by a lease's value (see :class:`Lease`)."""
    text = token.decode("utf-8", "replace") if isinstance(token, bytes) else token
    parts = text.split(" ")
    return parts[0], parts[1] if len(parts) > 1 else None


def _leases(client: redis.Redis, prefix: str) -> dict[str | None, tuple[bytes, int]]:
    """Each held lease of ``prefix`` by scope (None: the unscoped one): value, ms to expiry."""
    out: dict[str | None, tuple[bytes, int]] = {}
    base = f"{prefix}:writer"
    for raw in client.scan_iter(match=f"{base}*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if key != base and not key.startswith(base + ":"):
            continue
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        value, ttl = pipe.execute()
        if value is not None:
            out[key[len(base) + 1 :] or None] = (bytes(value), int(ttl))
    return out


def worker_statuses(
    client: redis.Redis, store: RedisStore, scopes: Sequence[str] = ()
) -> list[WorkerStatus]:
    """The writers of ``store``'s prefix: every scope that committed (or only ``scopes``), the
    unscoped worker if it committed, and any writer holding a lease before its first commit."""
    checkpoints: dict[str | None, bytes] = {
        s: b for s, b in registered_scopes(store).items() if not scopes or s in scopes
    }
    unscoped = store.get_meta(CHECKPOINT)
    if unscoped is not None and not scopes:
        checkpoints[None] = unscoped
    leases = _leases(client, store.prefix)
    if scopes:
        leases = {s: v for s, v in leases.items() if s in scopes}
    out = []
    for scope in sorted(checkpoints.keys() | leases.keys(), key=lambda s: (s is not None, s)):
        status = WorkerStatus(scope)
        blob = checkpoints.get(scope)
        if blob is not None:
            ckpt = decode_checkpoint(blob)
            status.streams = sorted(ckpt.offsets)
            status.commits, status.events = ckpt.seq, ckpt.events
            status.duplicates, status.dead_letters = ckpt.duplicates, ckpt.dead_letters
        if scope in leases:
            token, ttl = leases[scope]
            status.live = True
            status.consumer, status.process = holder_of(token)
            status.lease_expires_ms = ttl if ttl >= 0 else None
        out.append(status)
    return out


def shared_tasks(store: RedisStore, scopes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each task's prequential metrics over ``scopes`` (added up, as for Kafka partitions; drift
    stays per scope and is left out), with the examples its shared model learned when the
    workers share one (``run.shared_model``). Empty before the config is stored."""
    if store.get_meta(CONFIG) is None:
        return {}
    views: list[Store] = [ScopedStore(store, s) for s in scopes] if scopes else [store]
    out = {}
    for task in (t.name for t in stored_config(store).tasks):
        blobs = [view.get_meta(metrics_meta(task)) for view in views]
        merged = regression.merged_metrics([b for b in blobs if b is not None]) or Prequential()
        out[task] = {k: v for k, v in merged.summary().items() if k != "drift"}
        if scopes and store.get_meta(model_meta(task)) is not None:
            out[task]["shared_model_learned"] = shared_learned(store, task)
    return out


def check_owner(store: RedisStore, scope: str | None, streams: Sequence[str]) -> None:
    """Refuse streams whose offsets another scope of the prefix commits (or the unscoped
    worker, or a scope when this worker has none): two owners of a stream would each apply
    its entries, into the same shared profiles, and neither would see the other's offset."""
    others: dict[str, bytes | None] = {
        f"scope {s!r}": blob for s, blob in registered_scopes(store).items() if s != scope
    }
    if scope is not None:
        others["the worker without --scope"] = store.get_meta(CHECKPOINT)
    for owner, blob in others.items():
        if blob is None:
            continue
        taken = sorted(set(decode_checkpoint(blob).offsets) & set(streams))
        if taken:
            raise ConfigError(
                f"{', '.join(taken)} is committed by {owner} of prefix {store.prefix!r}: a "
                "partition stream belongs to one scope; run its partitions with that --scope"
            )

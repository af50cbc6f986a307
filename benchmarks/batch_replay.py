"""The Kafka apply path's per-batch CPU, without a broker: which batches cost more, and why.

From the repository root, with Redis on 127.0.0.1:6379 (a fresh key prefix, deleted)::

    .venv/bin/python benchmarks/batch_replay.py --events 1200000 --batch-size 4000 \
        --trace /tmp/replay.jsonl
    .venv/bin/python benchmarks/batch_replay.py ... --gc default   # the collector untuned

Applies ``benchmarks/freshness.py``'s synthetic stream (the same events, re-stamped so every
event id is new, each cycle of the pool one span of event time later) to one partition with
``apply_records``, the Kafka worker's apply path, in batches of ``--batch-size``, and writes the
worker's per-batch trace (``liveprofile.kafka.trace``) for ``benchmarks/batch_trace.py``.
CPU time per batch hardly depends on what else runs on the machine, so periodic work (a batch
that costs several times its neighbours) shows up here even on a busy machine, where wall-clock
freshness figures do not separate it from waiting for a core.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
import uuid
from pathlib import Path

import msgspec

from liveprofile.config import PipelineConfig
from liveprofile.engine.gc_tuning import fewer_collections
from liveprofile.engine.local import RunStats
from liveprofile.events.schema import EventParser
from liveprofile.kafka.partition import apply_records, load_partition
from liveprofile.kafka.trace import BatchTrace
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import check_config

sys.path.insert(0, str(Path(__file__).parent))
from freshness import event_pool


def lines(events: int) -> list[bytes]:
    pool = event_pool(2000, 14)
    span = pool[-1]["ts"] - pool[0]["ts"] + 1.0
    out = []
    for i in range(events):
        base = pool[i % len(pool)]
        rec = {**base, "event_id": f"r-{i}", "user_id": f"r-{base['user_id']}"}
        rec["ts"] = base["ts"] + (i // len(pool)) * span
        out.append(msgspec.json.encode(rec))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=600_000, help="events to apply")
    parser.add_argument("--batch-size", type=int, default=4000, help="events per batch")
    parser.add_argument("--trace", type=Path, required=True, help="the trace file to write")
    parser.add_argument(
        "--gc",
        choices=("worker", "default"),
        default="worker",
        help="the collector: as the Kafka worker runs it (the CLI's thresholds, raised by "
        "engine.gc_tuning.fewer_collections), or the interpreter's defaults",
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    args = parser.parse_args()
    records = lines(args.events)
    config = PipelineConfig()
    store = FencedRedisStore(args.redis, prefix=f"batch-replay-{uuid.uuid4().hex[:8]}")
    args.trace.unlink(missing_ok=True)
    trace = BatchTrace(args.trace, phase_clock=time.process_time)  # phases in CPU ms
    try:
        check_config(store, config)
        owned, _ = load_partition(store, config, "t", 0, {})
        parse, stats = EventParser(), RunStats()
        if args.gc == "default":
            gc.set_threshold(700, 10, 10)
        else:
            gc.set_threshold(50_000, 20, 20)  # as the CLI sets it
        tuned = fewer_collections() if args.gc == "worker" else contextlib.nullcontext()
        with tuned:
            for start in range(0, len(records), args.batch_size):
                end = min(start + args.batch_size, len(records))
                chunk = [(o, records[o]) for o in range(start, end)]
                trace.polled(time.perf_counter(), time.perf_counter())
                began, cpu = time.perf_counter(), time.process_time()
                apply_records(store, "t", owned, chunk, stats, parse)
                now = time.time()
                trace.applied(
                    0,
                    len(chunk),
                    began,
                    time.perf_counter(),
                    time.process_time() - cpu,
                    (now, now),
                )
    finally:
        trace.close()
        store.drop()
        store.close()
    print(f"{stats.events} events in {stats.batches} batches; trace in {args.trace}")


if __name__ == "__main__":
    main()

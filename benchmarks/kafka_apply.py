"""What the Kafka worker's apply path costs per event, without the broker in the way.

From the repository root, with Redis on 127.0.0.1:6379 (fresh key prefixes are used and
deleted)::

    .venv/bin/python benchmarks/kafka_apply.py
    # the same, side by side with another checkout of the code (e.g. an older commit,
    # extracted with `git archive COMMIT | tar -x -C /tmp/old`):
    .venv/bin/python benchmarks/kafka_apply.py --baseline /tmp/old/src --rounds 2

Each run is a process of its own that drives the Kafka runners' one apply path
(``kafka.worker.apply_records``: parse, step, shared-model read-back and merge, one fenced
commit per batch) with records of one partition held in memory, batches of ``--batch-size``:

* ``cj``: the first ``--limit`` Complete Journey transactions with its quick-start config (the
  ``repurchase`` task, FTRL, 2^20 coordinates);
* ``synthetic``: the freshness benchmark's synthetic funnel events (``benchmarks/
  freshness.py``) with the default config (velocity counts on).

Reported per run: events/s (wall clock) and CPU seconds of the process per event (Redis's own
CPU is not counted; the ``HMGET``/``HSET`` work done by Redis for the shared model is). With
``--baseline`` every run is made twice in a row, with this checkout and with the code under
``--baseline`` (put first on ``PYTHONPATH``), and ``--rounds`` repeats the set, interleaved,
reporting the round of each with the least CPU per event (on a shared machine the wall-clock
rate swings with the load far more than the CPU a process spends per event).

Prints a table with a row per data set and code (events/s, CPU microseconds per event);
``--json`` also writes the best run of each to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_RUN = """
import json, resource, sys, time, uuid
import msgspec
sys.path.insert(0, "benchmarks")
from liveprofile.config import PipelineConfig
from liveprofile.engine.gc_tuning import fewer_collections
from liveprofile.engine.local import RunStats
from liveprofile.events.schema import EventParser, encode_event
from liveprofile.kafka.partition import apply_records, load_partition
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import check_config
data, limit, size, url = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if data == "cj":
    from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config
    config = quickstart_config()
    source = CompleteJourneySource(limit=limit)
    lines = [encode_event(e) for b in source.batches(0, 50_000) for e in b.events]
else:
    from freshness import event_pool
    config = PipelineConfig()
    lines = [msgspec.json.encode(e) for e in event_pool(2000, 14)][:limit]
store = FencedRedisStore(url, prefix=f"kafka-apply-{uuid.uuid4().hex[:8]}")
try:
    check_config(store, config)
    owned, _ = load_partition(store, config, "t", 0, {})
    parser, stats = EventParser(), RunStats()
    before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with fewer_collections():  # as the worker runs
        for start in range(0, len(lines), size):
            records = [(o, lines[o]) for o in range(start, min(start + size, len(lines)))]
            apply_records(store, "t", owned, records, stats, parser)
    seconds, after = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF)
finally:
    store.drop()
    store.close()
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"events": len(lines), "batches": stats.batches,
                  "events_per_s": round(len(lines) / seconds, 1),
                  "cpu_us_per_event": round(1e6 * cpu / len(lines), 1)}))
"""


def run_one(data: str, args: argparse.Namespace, src: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    argv = [data, str(args.limit), str(args.batch_size), args.redis]
    out = subprocess.run(
        [sys.executable, "-c", _RUN, *argv], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default="cj,synthetic",
        help="comma-separated data sets: cj, synthetic or both (default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=int, default=100_000, help="events (records) per run (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=5000,
        help="records per applied batch, one commit each (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline",
        help="a src/ folder of other code (e.g. an older commit) to run each data set with too; "
        "default: this checkout only",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="interleaved repetitions of the set of runs; per code and data set the one "
        "with the least CPU per event is kept (default: %(default)s)",
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="Redis URL of the stores, under fresh key prefixes (default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the batch size and the best run per code and data set to this JSON file",
    )
    args = parser.parse_args()
    codes: dict[str, str | None] = {"this": None}
    if args.baseline:
        codes["baseline"] = args.baseline
    datas = args.data.split(",")
    best: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in codes}
    for _ in range(args.rounds):
        for data in datas:
            for name, src in codes.items():
                row = run_one(data, args, src)
                old = best[name].get(data)
                if old is None or row["cpu_us_per_event"] < old["cpu_us_per_event"]:
                    best[name][data] = row
    print(f"{'data':>10} {'code':>9} {'events/s':>10} {'cpu us/event':>13}")
    for data in datas:
        for name in codes:
            row = best[name][data]
            rate, cpu = row["events_per_s"], row["cpu_us_per_event"]
            print(f"{data:>10} {name:>9} {rate:>10.0f} {cpu:>13}")
    if args.json:
        args.json.write_text(json.dumps({"batch_size": args.batch_size, "best": best}, indent=1))


if __name__ == "__main__":
    main()

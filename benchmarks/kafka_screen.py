"""What screening costs the Kafka apply path when a batch holds an event to dead-letter.

From the repository root, with Redis on 127.0.0.1:6379 (fresh key prefixes are used and
deleted)::

    .venv/bin/python benchmarks/kafka_screen.py --rounds 3

The Kafka runners' apply path (``kafka.partition.apply_records``) screens each batch
(``engine.screen``). A batch of plain events is checked at once on its columns; a batch with an
event to dead-letter (here: one dated 2100 in every batch) is judged event by event, then
applied as columns again. Both data sets are the freshness benchmark's synthetic events
(``benchmarks/freshness.py``) with the default config, applied in batches of ``--batch-size``
by a process of their own, interleaved, ``--rounds`` times; per data set the run with the least
CPU per event is kept (the machine may be shared). ``kafka_apply.py --baseline`` compares the
clean path with another checkout of the code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

_RUN = """
import json, resource, sys, time, uuid
import msgspec
sys.path.insert(0, "benchmarks")
from freshness import event_pool
from liveprofile.config import PipelineConfig
from liveprofile.engine.gc_tuning import fewer_collections
from liveprofile.engine.local import RunStats
from liveprofile.events.schema import EventParser
from liveprofile.kafka.partition import apply_records, load_partition
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import check_config
dirty, limit, size, url = sys.argv[1] == "dirty", int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
config = PipelineConfig()
lines = [msgspec.json.encode(e) for e in event_pool(2000, 14)][:limit]
if dirty:  # one event dated 2100 in the middle of every batch, in place of a valid one
    for k in range(size // 2, len(lines), size):
        e = msgspec.json.decode(lines[k])
        lines[k] = msgspec.json.encode({**e, "event_id": f"future-{k}", "ts": 4_102_444_800.0})
store = FencedRedisStore(url, prefix=f"kafka-screen-{uuid.uuid4().hex[:8]}")
try:
    check_config(store, config)
    owned, _ = load_partition(store, config, "t", 0, {})
    parser, stats = EventParser(), RunStats()
    before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with fewer_collections():
        for start in range(0, len(lines), size):
            records = [(o, lines[o]) for o in range(start, min(start + size, len(lines)))]
            apply_records(store, "t", owned, records, stats, parser)
    seconds, after = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF)
finally:
    store.drop()
    store.close()
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"events": len(lines), "dead_letters": stats.dead_letters,
                  "events_per_s": round(len(lines) / seconds, 1),
                  "cpu_us_per_event": round(1e6 * cpu / len(lines), 1)}))
"""


def run_one(data: str, args: argparse.Namespace) -> dict[str, Any]:
    argv = [data, str(args.limit), str(args.batch_size), args.redis]
    out = subprocess.run(
        [sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=100_000, help="records per run (%(default)s)")
    parser.add_argument(
        "--batch-size", type=int, default=5000, help="records per batch (%(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL")
    args = parser.parse_args()
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for data in ("clean", "dirty"):
            row = run_one(data, args)
            if data not in best or row["cpu_us_per_event"] < best[data]["cpu_us_per_event"]:
                best[data] = row
    print(f"{'data':>6} {'dead letters':>13} {'events/s':>10} {'cpu us/event':>13}")
    for data, row in best.items():
        print(
            f"{data:>6} {row['dead_letters']:>13} {row['events_per_s']:>10.0f} "
            f"{row['cpu_us_per_event']:>13.1f}"
        )


if __name__ == "__main__":
    main()

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

Each batch's commit is sent in the background while the next batch is read, as the Kafka worker
does (``FencedRedisStore.overlap``), unless ``--no-overlap`` is given or the code under test
cannot (then each commit lands before the next batch is read).

Reported per run: events/s (wall clock) and CPU seconds of the process per event (Redis's own
CPU is not counted; the ``HMGET``/``HSET`` work done by Redis for the shared model is). With
``--baseline`` every run is made twice in a row, with this checkout and with the code under
``--baseline`` (put first on ``PYTHONPATH``), and ``--rounds`` repeats the set, interleaved,
reporting the round of each with the least CPU per event (on a shared machine the wall-clock
rate swings with the load far more than the CPU a process spends per event).

Prints a table with a row per data set and code (events/s, CPU microseconds per event);
``--json`` also writes the best run of each to a file.

``--breakdown`` also times the parts of the apply path in each run (CPU time of the process
inside each part, per event, in the best run): decoding the records (``parse_json``), the step
(``Core.step``) and inside it the profile rows' write-back (``store_users``, of which
``row_fields_bytes``), the held profiles' stored bytes (``ProfileMap.rows``), the rows' read
(``load_users``), the batch's arrays (``batch_events``), the kernel (``kernel.run``), the rows kept
for the next batch (``ResidentUsers.keep``), the velocity counts (``count_velocity``), the
learners (``_learn``), the population, traits and segments (``finish``), then the commit's rows
(``commit_payload``, of which ``KernelBytes.rows``) and the store's transaction
(``store.commit``). Parts nest, so they do not add up to the total;
a part the code under test lacks is left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from subrun import run_json

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
overlap = sys.argv[5] == "overlap"
spent = {}
if len(sys.argv) > 6:  # --breakdown: CPU time inside each part of the apply path
    import importlib
    def timed(where, label):
        module, _, attr = where.partition(":")
        try:
            owner = importlib.import_module(module)
        except ModuleNotFoundError:  # a part the code under test lacks
            return
        for part in attr.split(".")[:-1]:
            owner = getattr(owner, part, None)
        inner = getattr(owner, attr.split(".")[-1], None)
        if inner is None:
            return
        spent[label] = 0.0
        def part(*args, **kwargs):
            began = time.process_time()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - began
        setattr(owner, attr.split(".")[-1], part)
    for where, label in [
        ("liveprofile.events.schema:EventParser.parse_json", "parse_json"),
        ("liveprofile.kafka.partition:json_columns", "json_columns"),
        ("liveprofile.engine.core:Core.step", "Core.step"),
        ("liveprofile.engine.compiled:store_users", "store_users"),
        ("liveprofile.engine.rowio:row_fields_bytes", "row_fields_bytes"),
        ("liveprofile.engine.lazyprofiles:ProfileMap.rows", "ProfileMap.rows"),
        ("liveprofile.engine.compiled:load_users", "load_users"),
        ("liveprofile.engine.compiled:batch_events", "batch_events"),
        ("liveprofile.engine.kernel:run", "kernel.run"),
        ("liveprofile.engine.resident:ResidentUsers.keep", "ResidentUsers.keep"),
        ("liveprofile.engine.step:Step.finish", "finish"),
        ("liveprofile.engine.compiled:count_velocity", "count_velocity"),
        ("liveprofile.engine.compiled:CompiledStep._learn", "_learn"),
        ("liveprofile.engine.state:PipelineState.commit_payload", "commit_payload"),
        ("liveprofile.engine.profilerows:KernelBytes.rows", "KernelBytes.rows"),
        ("liveprofile.redis.fence:FencedRedisStore.commit", "store.commit"),
    ]:
        timed(where, label)
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
    overlap = overlap and hasattr(store, "settle")  # code that can send commits in the background
    store.overlap = overlap
    before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with fewer_collections():  # as the worker runs
        for start in range(0, len(lines), size):
            records = [(o, lines[o]) for o in range(start, min(start + size, len(lines)))]
            apply_records(store, "t", owned, records, stats, parser)
        if overlap:
            store.settle()
    seconds, after = time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF)
finally:
    store.drop()
    store.close()
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"events": len(lines), "batches": stats.batches,
                  "events_per_s": round(len(lines) / seconds, 1),
                  "cpu_us_per_event": round(1e6 * cpu / len(lines), 1),
                  "parts_us_per_event": {k: round(1e6 * v / len(lines), 2)
                                         for k, v in spent.items()}}))
"""


def run_one(data: str, args: argparse.Namespace, src: str | None) -> dict[str, Any]:
    argv = [data, str(args.limit), str(args.batch_size), args.redis]
    argv.append("sequential" if args.no_overlap else "overlap")
    if args.breakdown:
        argv.append("breakdown")
    return run_json(_RUN, argv, src)


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
        "--breakdown",
        action="store_true",
        help="also time the parts of the apply path (see above) and print them per run",
    )
    parser.add_argument(
        "--no-overlap",
        action="store_true",
        help="commit each batch before reading the next (default: send the commit in the "
        "background, as the Kafka worker does, when the code under test can)",
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
    if args.breakdown:
        parts = list(
            dict.fromkeys(
                k for c in best.values() for r in c.values() for k in r["parts_us_per_event"]
            )
        )
        print(f"\nCPU us/event inside each part (best run; parts nest):\n{'part':>18}", end="")
        columns = [(name, data) for data in datas for name in codes]
        print("".join(f" {data[:6] + '/' + name:>16}" for name, data in columns))
        for part in parts:
            cells = (best[name][data]["parts_us_per_event"].get(part) for name, data in columns)
            print(f"{part:>18}" + "".join(f" {'-' if c is None else c:>16}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps({"batch_size": args.batch_size, "best": best}, indent=1))


if __name__ == "__main__":
    main()

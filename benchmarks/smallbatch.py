"""What a batch costs: the Complete Journey replayed into SQLite at several batch sizes.

From the repository root::

    .venv/bin/python benchmarks/smallbatch.py --json /tmp/smallbatch.json
    # the same, side by side with another checkout of the code (e.g. an older commit,
    # extracted with `git archive COMMIT | tar -x -C /tmp/old`):
    .venv/bin/python benchmarks/smallbatch.py --baseline /tmp/old/src

For each size of ``--sizes``, the first ``--limit`` Complete Journey transactions are replayed
with ``quickstart_config()`` and ``run.batch_size`` set to that size into a fresh SQLite store
(``api.replay``, no progress bar), each run in its own process. With ``--baseline``, every run
is made twice in a row, once with this checkout and once with the code under ``--baseline``
(put first on ``PYTHONPATH``), so both see the same load on the machine; ``--rounds`` repeats
the whole set and the best round of each is reported. Reported per run: events/s (wall clock,
from the replay's own timer), CPU seconds of the process per event, and the prequential AUC
(equal for both when they compute the same thing).

Prints one JSON line per run, then a table with a row per batch size and the best events/s and
CPU microseconds per event of each code; ``--json`` also writes the best runs and the settings
to a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from subrun import run_json

_RUN = """
import json, os, resource, sys, tempfile
import msgspec
from liveprofile import api
from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config
size, limit = int(sys.argv[1]), int(sys.argv[2])
config = quickstart_config()
config = msgspec.structs.replace(config, run=msgspec.structs.replace(config.run, batch_size=size))
folder = tempfile.mkdtemp()
before = resource.getrusage(resource.RUSAGE_SELF)
summary = api.replay(CompleteJourneySource(limit=limit), store=os.path.join(folder, "p.db"),
                     config=config, progress=False)
after = resource.getrusage(resource.RUSAGE_SELF)
cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"events": summary["events"], "events_per_s": summary["events_per_s"],
                  "cpu_us_per_event": round(1e6 * cpu / max(summary["events"], 1), 1),
                  "auc": summary["tasks"]["repurchase"].get("auc")}))
"""


def run_one(size: int, limit: int, src: str | None) -> dict[str, Any]:
    return run_json(_RUN, [str(size), str(limit)], src)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="1000,5000,20000,100000",
        help="comma-separated batch sizes (run.batch_size), one run each (default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=300_000,
        help="Complete Journey transactions replayed per run (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline",
        help="a src/ folder of other code (e.g. an older commit) to run each size with too; "
        "default: this checkout only",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repetitions of the whole set; the run with the most events/s is kept per code and "
        "size (default: %(default)s)",
    )
    parser.add_argument(
        "--json", type=Path, help="also write the settings and the best runs to this JSON file"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    codes: dict[str, str | None] = {"this": None}
    if args.baseline:
        codes["baseline"] = args.baseline
    best: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in codes}
    run_one(sizes[0], 5_000, None)  # warm the numba cache (and the dataset's download)
    if args.baseline:
        run_one(sizes[0], 5_000, args.baseline)
    for _ in range(args.rounds):
        for size in sizes:
            for name, src in codes.items():
                r = run_one(size, args.limit, src)
                print(json.dumps({"code": name, "batch_size": size, **r}), flush=True)
                kept = best[name].get(size)
                if kept is None or r["events_per_s"] > kept["events_per_s"]:
                    best[name][size] = r
    print(f"{'batch size':>10} " + " ".join(f"{n + ' ev/s':>15} {'µs CPU/ev':>10}" for n in codes))
    for size in sizes:
        cells = [
            f"{best[n][size]['events_per_s']:>15,.0f} {best[n][size]['cpu_us_per_event']:>10}"
            for n in codes
        ]
        print(f"{size:>10,} " + " ".join(cells))
    if args.json:
        args.json.write_text(
            json.dumps({"settings": vars(args) | {"json": str(args.json)}, "best": best}, indent=2)
        )


if __name__ == "__main__":
    main()

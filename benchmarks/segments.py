"""What real-time segments cost: the Complete Journey replay with no segments and with 20.

From the repository root::

    .venv/bin/python benchmarks/segments.py --limit 500000 --repeat 3 \
        --json benchmarks/segments_results.json

The same replay (``quickstart_config()``, the first ``--limit`` transactions, default all
1.47M) runs into a fresh SQLite store once without segments and once with the 20 segments
below, ``--repeat`` times each in alternating order; the table shows the run of each with the
least CPU time (the process's, which a busy machine disturbs less than the wall clock) and the
overhead in CPU time. Segment rules are evaluated for every user a batch touches, as of the batch's
watermark, and members of time-dependent segments are re-checked once per day of event time.
Prints the table and each segment's members at the end; ``--json`` also writes the figures to a
file.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from liveprofile.api import check_config
from liveprofile.config import PipelineConfig
from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config
from liveprofile.engine.local import LocalRunner
from liveprofile.store.sqlite import SQLiteStore

#: 20 segments a grocery marketer might declare, over every kind of profile field
SEGMENTS = {
    "big_spenders_90d": "monetary_90d > 200 and days_since_last_purchase < 14",
    "spent_30d": "monetary_30d > 100",
    "weekly_shoppers": "monetary_7d > 0 and frequency >= 50",
    "lapsing": "days_since_last_purchase > 21",
    "at_risk": "lifecycle == 'at_risk'",
    "new_customers": "lifecycle == 'new'",
    "loyal": "frequency >= 500 and days_active > 180",
    "high_value": "monetary > 3000",
    "produce_lovers": "interest['PRODUCE'] > 20",
    "meat_lovers": "interest['MEAT'] > 10",
    "snackers": "interest['BAG SNACKS'] > 5",
    "dairy_fans": "interest['FLUID MILK PRODUCTS'] > 5",
    "bakery_fans": "interest['PASTRY'] > 5",
    "drug_gm": "interest['DRUG GM'] > 15",
    "likely_repurchase": "score.repurchase > 0.7",
    "unlikely_repurchase": "score.repurchase < 0.2",
    "busy_week": "decayed.purchase > 60",
    "basket_builders": "mean_value > 0 or monetary / max(frequency, 1) > 4",
    "deli": "interest['DELI'] > 5 and monetary_30d > 50",
    "frozen": "interest['FROZEN GROCERY'] > 5 or interest['FRZN MEAT/MEAT DINNERS'] > 3",
}


def run(config: PipelineConfig, limit: int | None, folder: Path) -> dict[str, Any]:
    store = SQLiteStore(folder / "profiles.db")
    store.setup()
    check_config(store, config)
    runner = LocalRunner(config, store, folder / "dead.jsonl", changes=folder / "changes.jsonl")
    source = CompleteJourneySource()
    started, cpu = time.perf_counter(), time.process_time()
    stats = runner.run(source, limit=limit)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    members = {name: len(m) for name, m in runner.state.members.items()}
    runner.close()
    changes = (folder / "changes.jsonl").read_bytes().count(b"\n") if members else 0
    return {
        "events": stats.events,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "events_per_s": round(stats.events / seconds),
        "changes": changes,
        "members": members,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=None, help="Transactions (default: all).")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Runs of each setting, alternating; the best is shown (default 1).",
    )
    parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    base = quickstart_config()
    configs = {
        "no segments": base,
        "20 segments": msgspec.structs.replace(base, segments=SEGMENTS),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for _ in range(args.repeat):
        for name, config in configs.items():
            with tempfile.TemporaryDirectory() as tmp:
                runs[name].append(run(config, args.limit, Path(tmp)))
    best = {name: min(r, key=lambda x: x["cpu_seconds"]) for name, r in runs.items()}
    base_s = best["no segments"]["cpu_seconds"]
    table = Table(title=f"Complete Journey replay, {best['no segments']['events']:,} events")
    for column in ("setting", "CPU s", "wall s", "events/s", "overhead", "segment changes"):
        table.add_column(column, justify="left" if column == "setting" else "right")
    for name, r in best.items():
        overhead = (r["cpu_seconds"] / base_s - 1) * 100
        table.add_row(
            name,
            f"{r['cpu_seconds']:.1f}",
            f"{r['seconds']:.1f}",
            f"{r['events_per_s']:,}",
            "-" if name == "no segments" else f"{overhead:+.1f}%",
            f"{r['changes']:,}",
        )
    Console().print(table)
    sizes = best["20 segments"]["members"]
    Console().print("members at the end: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    if args.json:
        result = {
            "machine": platform.platform(),
            "runs": runs,
            "overhead_pct": round((best["20 segments"]["cpu_seconds"] / base_s - 1) * 100, 1),
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

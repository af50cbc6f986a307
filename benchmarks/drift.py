"""How soon the drift detector finds the synthetic shop's planted drift, and how often it cries
wolf before it.

For each seed the shop is generated, replayed into a fresh SQLite store with the default
pipeline (the ``convert`` task: a view is positive if the item is bought within a day), and the
drift events the ``convert`` task's detector raised are compared with the generator's
``drift_ts``. Two shops:

- strong: every user draws new, peaked preferences at the drift, and preferences weigh more in
  carts and purchases (``drift_fraction=1``, ``preference_concentration=0.1``,
  ``purchase_affinity=cart_affinity=5``), a drift the model's loss shows;
- default: the generator's defaults (half the users drift; their conversion rates barely move).

Per seed: detections before the drift (false alarms), and for the first detection after it the
convert examples scored between the drift and the detection (the examples whose exposure is at
or after ``drift_ts``, up to the one that fired the test), the pipeline events in that span, and
its length in event-time hours. The detection fires when the firing example is learned, which for
a delayed task is when its one-day window closes.

With ``--completejourney N`` it also replays the first N purchases of the Complete Journey (the
quick start's pipeline) and lists the ``repurchase`` task's detections, and the replay's
throughput: real data has no planted drift to compare with, so this shows how often the
detector fires there.

    python benchmarks/drift.py                   # seeds 0-4, both shops
    python benchmarks/drift.py --seeds 0 1 2 --shop strong
    python benchmarks/drift.py --shop none --completejourney 600000

Prints a Markdown table, one row per shop and seed, and, with ``--completejourney``, the replay's
throughput and a table of the ``repurchase`` detections; nothing is written.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import liveprofile
from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate, write_jsonl
from liveprofile.learn.metrics import Prequential
from liveprofile.store import open_store

SHOPS: dict[str, dict[str, Any]] = {
    "strong": {
        "drift_fraction": 1.0,
        "preference_concentration": 0.1,
        "purchase_affinity": 5.0,
        "cart_affinity": 5.0,
    },
    "default": {},
}


def run(shop: str, seed: int) -> dict[str, Any]:
    synthetic = SyntheticConfig(seed=seed, **SHOPS[shop])
    drift_ts = synthetic.drift_ts
    # one-day metric windows start at midnight, as the drift does: examples before it add up
    config = PipelineConfig.from_dict({"run": {"metrics_window": "1d"}})
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        write_jsonl(events, synthetic)
        db = Path(tmp) / "s.db"
        summary = liveprofile.replay(events, store=db, config=config, progress=False)
        store = open_store(str(db))
        try:
            blob = store.get_meta("metrics/convert")
            assert blob is not None
            windows = Prequential.from_bytes(blob).windows()
        finally:
            store.close()
    times = np.array([float(e["ts"]) for e in generate(synthetic)])
    task = summary["tasks"]["convert"]
    found = task["drift"]["events"]
    before = [e for e in found if e["ts"] < drift_ts]
    after = [e for e in found if e["ts"] >= drift_ts]
    scored_before = sum(w["n"] for w in windows if w["end"] <= drift_ts)
    first = after[0] if after else None
    day = {w["start"]: w["logloss"] for w in windows}
    return {
        "loss_before": day.get(drift_ts - 86400.0),
        "loss_after": day.get(drift_ts),
        "shop": shop,
        "seed": seed,
        "examples": task["n"],
        "false_alarms": len(before),
        "detected": first is not None,
        "examples_after": None if first is None else first["seen"] - scored_before,
        "events_after": None
        if first is None
        else int(((times >= drift_ts) & (times <= first["ts"])).sum()),
        "hours_after": None if first is None else (first["ts"] - drift_ts) / 3600,
        "later_detections": max(0, len(after) - 1),
    }


def completejourney(rows: int) -> None:
    from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config

    with tempfile.TemporaryDirectory() as tmp:
        source = CompleteJourneySource(limit=rows)
        t0 = time.perf_counter()
        summary = liveprofile.replay(
            source, store=Path(tmp) / "cj.db", config=quickstart_config(), progress=False
        )
        seconds = time.perf_counter() - t0
    task = summary["tasks"]["repurchase"]
    found = task["drift"]
    print(
        f"\nComplete Journey, first {summary['events']:,} purchases "
        f"({summary['events'] / seconds:,.0f} events/s): repurchase AUC {task['auc']:.4f}, "
        f"{task['n']:,} examples, "
        f"{found['detections']} drift detections"
    )
    print("\n| detected at (exposure time) | examples seen | statistic | mean loss since reset |")
    print("|---|---:|---:|---:|")
    for e in found["events"]:
        when = datetime.fromtimestamp(e["ts"], UTC).strftime("%Y-%m-%d %H:%M")
        print(f"| {when} | {e['seen']:,} | {e['statistic']:.1f} | {e['mean_loss']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="generator seeds, one shop and replay each (default: 0 1 2 3 4)",
    )
    parser.add_argument(
        "--shop",
        choices=[*SHOPS, "both", "none"],
        default="both",
        help="which synthetic shop to replay: strong, default, both or none (default: %(default)s)",
    )
    parser.add_argument(
        "--completejourney",
        type=int,
        default=0,
        metavar="N",
        help="also replay the first N Complete Journey purchases and list the repurchase "
        "task's detections; 0 skips it (default: %(default)s)",
    )
    args = parser.parse_args()
    shops = list(SHOPS) if args.shop == "both" else [] if args.shop == "none" else [args.shop]
    print(
        "| shop | seed | convert examples | log loss, day before / day after the drift "
        "| false alarms before the drift | detected "
        "| examples after the drift | events after | event-time hours after | later detections |"
    )
    print("|---|---:|---:|---|---:|---|---:|---:|---:|---:|")
    for shop in shops:
        for seed in args.seeds:
            r = run(shop, seed)
            cells = [
                "-" if r[k] is None else (f"{r[k]:.1f}" if k == "hours_after" else f"{r[k]:,}")
                for k in ("examples_after", "events_after", "hours_after")
            ]
            print(
                f"| {shop} | {seed} | {r['examples']:,} "
                f"| {r['loss_before']:.3f} / {r['loss_after']:.3f} | {r['false_alarms']} "
                f"| {'yes' if r['detected'] else 'no'} | {' | '.join(cells)} "
                f"| {r['later_detections']} |"
            )
    if args.completejourney:
        completejourney(args.completejourney)


if __name__ == "__main__":
    main()

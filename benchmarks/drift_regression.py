"""Drift detection on regression tasks: the synthetic shop with and without its planted drift.

The shop is replayed with the default tasks and two regression tasks (``target = "value"``,
``linreg``): ``view_value``, what a view of an item is followed by in purchases of that item
within a day (mostly nothing), and ``spend_7d``, what a purchase is followed by in the same
user's purchases within 7 days. Each task's detector watches its absolute error relative to its
MAE so far (``learn.regression.relative_error``). Printed per run and task: the detections, as
hours of event time from the planted ``drift_ts`` (negative: before it, a false alarm), and the
task's MAE before and after the drift.

    .venv/bin/python benchmarks/drift_regression.py
    .venv/bin/python benchmarks/drift_regression.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import liveprofile
from liveprofile.config import LabelConfig, LearnerConfig, PipelineConfig, TaskConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl

#: the planted drift of ``benchmarks/drift.py``'s strong runs (every user, peaked preferences)
STRONG = {
    "drift_fraction": 1.0,
    "preference_concentration": 0.1,
    "purchase_affinity": 5.0,
    "cart_affinity": 5.0,
}
REGRESSION = [
    TaskConfig(
        "view_value",
        on=["view"],
        label=LabelConfig(
            kind="delayed", conversion=["purchase"], key="item", window="1d", target="value"
        ),
        learner=LearnerConfig(kind="linreg"),
    ),
    TaskConfig(
        "spend_7d",
        on=["purchase"],
        label=LabelConfig(
            kind="delayed", conversion=["purchase"], key="user", window="7d", target="value"
        ),
        learner=LearnerConfig(kind="linreg"),
    ),
]


def run(seed: int, strong: bool, folder: Path) -> None:
    shop = SyntheticConfig(seed=seed, **(STRONG if strong else {"drift_fraction": 0.0}))
    name = f"seed {seed}, {'strong drift' if strong else 'no drift'}"
    events = folder / f"{seed}-{strong}.jsonl"
    write_jsonl(events, shop)
    config = PipelineConfig(tasks=[*PipelineConfig().tasks, *REGRESSION])
    out = liveprofile.replay(
        events, store=folder / f"{seed}-{strong}.db", config=config, progress=False
    )
    print(f"\n{name}: {out['events']:,} events, {shop.days} days, drift at day "
          f"{shop.drift_at * shop.days:.0f}")  # fmt: skip
    for task in ("convert", *(t.name for t in REGRESSION)):
        s = out["tasks"][task]
        hours = [round((e["ts"] - shop.drift_ts) / 3600, 1) for e in s["drift"]["events"]]
        score = f"MAE {s['mae']:.2f}" if s.get("mae") is not None else f"AUC {s['auc']:.4f}"
        print(f"  {task:<11} n {s['n']:>7,}  {score}  detections {s['drift']['detections']}: "
              f"{hours} h from the drift")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=[0, 1],
        help="generator seeds; each is replayed with and without the planted drift (default: 0 1)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for strong in (True, False):
                run(seed, strong, Path(tmp))


if __name__ == "__main__":
    main()

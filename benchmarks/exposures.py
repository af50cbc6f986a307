"""Every exposure an example (``open_per_key = 32``, the default) against one open example per
(user, key) (``open_per_key = 1``, the former rule), side by side in one run.

Each dataset is replayed through a fresh core with its pipeline, once per setting, and each task
is evaluated prequentially (predict at exposure time, learn when the label is known):

- ``auc``, ``logloss``, ``n``: the task's own prequential metrics, over the examples that
  setting learned (more of them with every exposure);
- ``auc common``: the AUC (``sklearn.metrics.roc_auc_score``) over the exposures *both* settings
  opened (those of ``open_per_key = 1``), from the prediction each setting made at exposure time:
  the same examples, so it shows whether learning from the repeated exposures predicts better;
- events/s: the replay alone (``Core.step``), the two settings interleaved ``--repeat`` times,
  best run kept.

Datasets: the Complete Journey (the quick start's ``repurchase`` task: the same household buys
the same product category within 14 days; ``--cj-limit`` transactions), MovieLens ratings (the
default ``like`` task; a user rates a movie once and ratings carry no category, so no delayed
task has a key there) and the synthetic shop (the default ``convert`` and ``repurchase`` tasks;
``--shop-users`` users over ``--shop-days`` days, seeds ``--seeds``; the shop's 28 days by
default would leave ``repurchase`` nothing learned before its examples are predicted).

    .venv/bin/python benchmarks/exposures.py
    .venv/bin/python benchmarks/exposures.py --cj-limit 0 --seeds 0 1 2   # all of it

With ``--throughput-only`` it replays the Complete Journey only and prints events/s (used to
compare commits: run it with ``PYTHONPATH`` at another checkout's ``src``). Otherwise it
prints, per dataset, each setting's events/s and a table with a row per task and setting;
nothing is written.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from sklearn.metrics import roc_auc_score
from streams import delayed_labels
from timed import dataset_options, timed_replay

from liveprofile.config import LabelConfig, PipelineConfig
from liveprofile.events.schema import Event

SETTINGS = {"one per key": 1, "every exposure": 32}


def with_per_key(config: PipelineConfig, per_key: int) -> PipelineConfig:
    """``config`` with ``open_per_key`` set on its delayed tasks (when this code has it)."""
    if "open_per_key" not in inspect.signature(LabelConfig).parameters:
        return config
    tasks = [
        msgspec.structs.replace(t, label=msgspec.structs.replace(t.label, open_per_key=per_key))
        if t.label.kind == "delayed"
        else t
        for t in config.tasks
    ]
    return msgspec.structs.replace(config, tasks=tasks)


def replay(config: PipelineConfig, batches: Sequence[Any]) -> dict[str, Any]:
    """Replay ``batches`` (event sequences); per task, the metrics and the prediction of every
    exposure by pending-example id; the replay's events/s."""
    opened: dict[str, dict[tuple[str, str, float], float]] = {t.name: {} for t in config.tasks}

    def record(out: Any) -> None:
        for name, log in out.pending.items():
            plain = log.log() if hasattr(log, "log") else log
            opened[name].update({p.id: p.p for p in plain.created})

    _, state, eps = timed_replay(config, batches, record)
    tasks = {name: task.metrics.summary() for name, task in state.tasks.items()}
    return {"tasks": tasks, "opened": opened, "eps": eps}


def common_auc(
    events: list[Event], config: PipelineConfig, opened: dict[str, dict[Any, float]]
) -> dict[str, float]:
    """Per delayed task, the AUC over the exposures the one-per-key rule opens."""
    out = {}
    for task in with_per_key(config, 1).tasks:
        if task.label.kind != "delayed":
            continue
        found = delayed_labels(events, task)
        labels = found.labels()
        by_item = task.label.key == "item"
        ids, ys = [], []
        for x, pos in enumerate(found.events):
            if np.isnan(labels[x]):
                continue
            e = events[pos]
            ids.append((e.user, e.item_id if by_item else e.category, e.ts))
            ys.append(labels[x])
        preds = opened[task.name]
        both = [(preds[i], y) for i, y in zip(ids, ys, strict=True) if i in preds]
        if len({y for _, y in both}) == 2:
            out[task.name] = float(roc_auc_score([y for _, y in both], [p for p, _ in both]))
    return out


def chunks(events: list[Event], size: int) -> list[list[Event]]:
    return [events[k : k + size] for k in range(0, len(events), size)]


def datasets(
    args: argparse.Namespace,
) -> list[tuple[str, PipelineConfig, Sequence[Any], list[Event]]]:
    """Per dataset: name, pipeline, batches as its source gives them, and the events."""
    from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config
    from liveprofile.datasets.movielens import movielens_source
    from liveprofile.datasets.synthetic import SyntheticConfig, generate
    from liveprofile.events import EventParser

    out = []
    cj = quickstart_config()
    source = CompleteJourneySource(limit=args.cj_limit or None)
    cj_batches = [b.events for b in source.batches(0, cj.run.batch_size)]
    out.append(("Complete Journey", cj, cj_batches, [e for b in cj_batches for e in b]))
    if args.throughput_only:
        return out
    ml = movielens_source(Path(args.data_dir) / "ratings.csv")
    ml_events = sorted(
        (e for b in ml.batches(0, 50_000) for e in b.events), key=lambda e: (e.ts, e.event_id)
    )
    out.append(("MovieLens", PipelineConfig(), chunks(ml_events, 20_000), ml_events))
    parser = EventParser()
    for seed in args.seeds:
        shop = SyntheticConfig(users=args.shop_users, days=args.shop_days, seed=seed)
        events = [parser.parse_fields(e) for e in generate(shop)]
        out.append(
            (f"synthetic shop, seed {seed}", PipelineConfig(), chunks(events, 20_000), events)
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    dataset_options(parser, "the two settings", repeat=3)
    parser.add_argument(
        "--data-dir",
        default="../shared/data/ml-latest-small",
        help="MovieLens folder holding ratings.csv (default: %(default)s)",
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="replay the Complete Journey only and print events/s per setting",
    )
    args = parser.parse_args()
    for name, base, batches, events in datasets(args):
        print(f"\n{name}: {len(events):,} events, batches of {base.run.batch_size:,}")
        runs: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat if name == "Complete Journey" else 1):
            for label, per_key in SETTINGS.items():
                got = replay(with_per_key(base, per_key), batches)
                best = runs.get(label)
                if best is None or got["eps"] > best["eps"]:
                    runs[label] = got
        for label in SETTINGS:
            print(f"  {label:>15}: {runs[label]['eps']:,.0f} events/s")
        if args.throughput_only:
            continue
        common = {label: common_auc(events, base, r["opened"]) for label, r in runs.items()}
        header = (
            f"  {'task':<11} {'setting':>15} {'n':>9} {'auc':>7} {'logloss':>8} {'auc common':>11}"
        )
        print(header)
        for task in base.tasks:
            for label in SETTINGS:
                m = runs[label]["tasks"][task.name]
                if not m["n"]:
                    continue
                c = common[label].get(task.name)
                print(
                    f"  {task.name:<11} {label:>15} {m['n']:>9,} {m['auc']:>7.4f} "
                    f"{m['logloss']:>8.4f} {'-' if c is None else f'{c:.4f}':>11}"
                )


if __name__ == "__main__":
    main()

"""Self-tuning (``learner.kind = "tuned"``) against each fixed setting of its grid, side by side.

On each dataset the task is replayed through a fresh core once per learner and evaluated
prequentially (each example predicted before it is learned; the task's own AUC):

- every fixed setting of ``GRID`` alone (FTRL's ``alpha`` and ``l2``, OGD's ``lr``);
- the tuned learner starting from the worst setting (``BAD``), with the rest of the grid as
  challengers: is its AUC within 0.002 of the best fixed setting chosen in hindsight?
- the cost per challenger: events/s of the replay (``Core.step`` alone) with the plain FTRL
  default and with a tuned learner of 0, 2 and 4 challengers, interleaved ``--repeat`` times,
  best run kept; with ``--tree``, also 2 challengers and a Hoeffding tree (River) as a third,
  and its AUC and champion.

Datasets: the Complete Journey (the quick start's ``repurchase`` task, ``--cj-limit``
transactions) and MovieLens ratings (the default ``like`` task, ``--ml-limit`` ratings).

    .venv/bin/python benchmarks/tuning.py
    .venv/bin/python benchmarks/tuning.py --cj-limit 0 --ml-limit 0   # all of it
    .venv/bin/python benchmarks/tuning.py --tree --timing-only   # the cost of a tree challenger

Prints, per dataset, each fixed setting's AUC, the tuned learner's AUC, gap and first decisions,
and the events/s of each learner timed; ``--out`` also writes the results to a JSON file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from timed import timed_replay

from liveprofile.config import LearnerConfig, PipelineConfig
from liveprofile.events.schema import Event

#: the fixed settings; the first is the bad one the tuned learner starts from
GRID: dict[str, dict[str, Any]] = {
    "ogd lr=1e-4": {"kind": "ogd", "params": {"lr": 1e-4}},
    "ftrl alpha=0.02": {"kind": "ftrl", "params": {"alpha": 0.02}},
    "ftrl alpha=0.1": {"kind": "ftrl", "params": {"alpha": 0.1}},
    "ftrl alpha=0.2": {"kind": "ftrl", "params": {"alpha": 0.2}},
    "ftrl alpha=0.5": {"kind": "ftrl", "params": {"alpha": 0.5}},
    "ftrl alpha=0.2 l2=10": {"kind": "ftrl", "params": {"alpha": 0.2, "l2": 10.0}},
    "ogd lr=0.05": {"kind": "ogd", "params": {"lr": 0.05}},
}
BAD = "ogd lr=1e-4"
TUNING: dict[str, Any] = {"margin": 0.01, "min_examples": 1000, "window": 5000}


#: a challenger of another kind (``--tree``)
TREE: dict[str, Any] = {"kind": "hoeffding", "params": {}}


def tuned(challengers: Sequence[str], extra: Sequence[dict[str, Any]] = ()) -> LearnerConfig:
    members = [*(GRID[c] for c in challengers), *extra]
    params = {"champion": GRID[BAD], "challengers": members, **TUNING}
    return LearnerConfig(kind="tuned", params=params)


def fixed(name: str) -> LearnerConfig:
    return LearnerConfig(kind=GRID[name]["kind"], params=GRID[name]["params"])


def with_learner(config: PipelineConfig, learner: LearnerConfig) -> PipelineConfig:
    tasks = [msgspec.structs.replace(t, learner=learner) for t in config.tasks]
    return msgspec.structs.replace(config, tasks=tasks)


def replay(config: PipelineConfig, batches: Sequence[Any], task: str) -> dict[str, Any]:
    """The task's prequential summary (and tuning decisions) and the replay's events/s."""
    _, state, eps = timed_replay(config, batches)
    ts = state.tasks[task]
    out = {"summary": ts.metrics.summary(), "eps": eps}
    tuning = getattr(ts.learner, "tuning", None)
    if tuning is not None:
        out["tuning"] = tuning()
    return out


def chunks(events: list[Event], size: int) -> list[list[Event]]:
    return [events[k : k + size] for k in range(0, len(events), size)]


def datasets(args: argparse.Namespace) -> list[tuple[str, str, PipelineConfig, list[Any]]]:
    """Per dataset: name, task, pipeline and batches as its source gives them."""
    from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config
    from liveprofile.datasets.movielens import movielens_source

    cj = quickstart_config()
    source = CompleteJourneySource(limit=args.cj_limit or None)
    cj_batches = [b.events for b in source.batches(0, cj.run.batch_size)]
    ml = movielens_source(Path(args.data_dir) / "ratings.csv")
    ml_events = sorted(
        (e for b in ml.batches(0, 50_000) for e in b.events), key=lambda e: (e.ts, e.event_id)
    )
    if args.ml_limit:
        ml_events = ml_events[: args.ml_limit]
    out = [
        ("Complete Journey", cj.tasks[0].name, cj, cj_batches),
        ("MovieLens", "like", PipelineConfig(), chunks(ml_events, 20_000)),
    ]
    return [d for d in out if args.only is None or d[0].lower().startswith(args.only[0])]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cj-limit",
        type=int,
        default=400_000,
        help="Complete Journey transactions replayed; 0: every one (default: %(default)s)",
    )
    parser.add_argument(
        "--ml-limit",
        type=int,
        default=0,
        help="MovieLens ratings replayed, in time order; 0: every one (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default="/work/shared/data/ml-latest-small",
        help="MovieLens folder holding ratings.csv (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="interleaved timing runs of the learners, best events/s kept (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default=None, help="also write the results, per dataset, to this JSON file"
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=TUNING["margin"],
        help="the tuned learner's margin: a challenger is promoted when its recent loss is below "
        "(1 - margin) times the champion's (default: %(default)s)",
    )
    parser.add_argument(
        "--min-examples",
        type=int,
        default=TUNING["min_examples"],
        help="the tuned learner's min_examples: examples learned between decisions, and the "
        "rollback period after a promotion (default: %(default)s)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=TUNING["window"],
        help="the tuned learner's window: about how many examples each member's recent loss "
        "averages over (default: %(default)s)",
    )
    parser.add_argument(
        "--only",
        choices=["cj", "ml"],
        default=None,
        help="only this dataset: cj (Complete Journey) or ml (MovieLens); default: both",
    )
    parser.add_argument(
        "--tree",
        action="store_true",
        help="also time a tuned learner with 2 challengers and a Hoeffding tree (River) as a "
        "third, and print its AUC and champion",
    )
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="only time the learners (events/s); skip the fixed settings' AUCs and the comparison",
    )
    args = parser.parse_args()
    TUNING.update(margin=args.margin, min_examples=args.min_examples, window=args.window)
    others = [g for g in GRID if g != BAD]
    results: dict[str, Any] = {}
    for name, task, config, batches in datasets(args):
        n_events = sum(len(b) for b in batches)
        print(f"\n{name}: {n_events} events, task {task}")
        timing: dict[str, float] = {}
        lineup = {
            "ftrl (plain)": LearnerConfig(kind="ftrl"),
            **{f"tuned, {k} challengers": tuned(others[:k]) for k in (0, 2, 4)},
        }
        if args.tree:
            lineup["tuned, 2 + hoeffding"] = tuned(others[:2], [TREE])
        if args.timing_only:
            for _ in range(args.repeat):
                for label, learner in lineup.items():
                    r = replay(with_learner(config, learner), batches, task)
                    timing[label] = max(timing.get(label, 0.0), r["eps"])
                    if _ == 0 and "tuning" in r:
                        print(f"  {label}: AUC {r['summary']['auc']:.4f}, champion "
                              f"{r['tuning']['champion']}")  # fmt: skip
            for label, eps in timing.items():
                print(f"  {label:<22} {eps:>10,.0f} events/s")
            results[name] = {"events": n_events, "events_per_s": timing}
            continue
        aucs = {}
        for setting in GRID:
            r = replay(with_learner(config, fixed(setting)), batches, task)
            aucs[setting] = r["summary"]["auc"]
            print(f"  fixed {setting:<22} AUC {aucs[setting]:.4f}  n {r['summary']['n']}")
        r = replay(with_learner(config, tuned(others)), batches, task)
        best = max(aucs, key=lambda s: aucs[s])
        gap = aucs[best] - r["summary"]["auc"]
        decisions = r["tuning"]["decisions"]
        print(
            f"  tuned from {BAD}: AUC {r['summary']['auc']:.4f}, best fixed {best} "
            f"{aucs[best]:.4f}, gap {gap:+.4f} ({'within' if gap <= 0.002 else 'NOT within'} "
            f"0.002); champion {r['tuning']['champion']}, {len(decisions)} decisions"
        )
        for d in decisions[:8]:
            print(
                f"    at {d['examples']}: {d['action']} {d['from']} -> {d['to']} "
                f"(loss {d['loss_from']:.4f} -> {d['loss_to']:.4f})"
            )
        for _ in range(args.repeat):
            for label, learner in lineup.items():
                eps = replay(with_learner(config, learner), batches, task)["eps"]
                timing[label] = max(timing.get(label, 0.0), eps)
        for label, eps in timing.items():
            print(f"  {label:<22} {eps:>10,.0f} events/s")
        results[name] = {
            "events": n_events,
            "fixed_auc": aucs,
            "tuned_auc": r["summary"]["auc"],
            "best_fixed": best,
            "gap": gap,
            "tuning": r["tuning"],
            "events_per_s": timing,
        }
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

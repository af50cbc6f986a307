"""liveprofile side by side with River, Vowpal Wabbit and scikit-learn, on real data, in one run.

From the repository root (the default run takes about 2.5 minutes on 2 cores)::

    .venv/bin/python benchmarks/compare.py --json benchmarks/results.json

``--against REF --rounds N`` runs commit REF's tree and this checkout alternately, each N times,
and prints their figures side by side with the ratio (:mod:`against`).

Options: ``--dataset movielens|completejourney|both`` (default both), ``--limit N`` (events per
dataset), ``--cj-limit N`` (Complete Journey events, default 300,000; more than 112,012, the
first 28 days: a shorter stream is refused, since each ``repurchase`` label is known 14 days
after its exposure and every exposure labelled within it would be scored before any label was
learned, AUC 0.5 for every system), ``--river-examples N``
(examples for River's learners alone, default 20,000; 0 runs them on all operations),
``--sklearn-events N`` (default 3,000),
``--data-dir`` (MovieLens ml-latest-small, default ``../shared/data/ml-latest-small``),
``--config-override KEY=VALUE`` (repeatable; e.g. ``features.behaviour=false``, the value read
as a TOML value, else as a string) and ``--no-behaviour`` (``features.behaviour=false`` and
``profile.behaviour_keys=0``), which change liveprofile's configuration on every dataset. With
``--against`` they apply to this checkout's side only: the older commit's compare.py may not know
them and its code may lack the keys, so they make the comparison like for like, e.g. without the
behaviour features that the older code does not compute::

    python benchmarks/compare.py --dataset completejourney --against f138ca8 --rounds 3 \\
        --river-examples 5000 --sklearn-events 1000 --no-behaviour

Every system sees the same events in the same order and is evaluated prequentially: predict
first, then learn, on every example in stream order. AUC and log loss come from
``sklearn.metrics`` on the collected predictions (clipped to [1e-15, 1 - 1e-15]). Timing is
``time.perf_counter`` around the work of each system only, single-threaded (numba kernels are
serial, BLAS pools are limited to one thread, Vowpal Wabbit runs in process).

- MovieLens ratings are sorted by ``(ts, event_id)`` once and written to a temporary CSV that every
  system reads in that order. Task ``like``: rating >= 4, known at once.
- Complete Journey transactions come in time order from ``CompleteJourneySource``. Task
  ``repurchase``: will the household buy the same product category again within 14 days, a
  delayed label. The labels are derived once with liveprofile's rules and checked against the
  model operations liveprofile's core produces. On the whole stream every system learns a label
  when its window closes; the "first N examples" rows learn each label right after predicting.

Rows, per dataset: liveprofile end to end and a River ``TargetAgg`` pipeline from the raw events;
liveprofile's learners and Vowpal Wabbit on the exact operations (hashed features, predict and
learn steps) liveprofile's core hands its learner; River's LogisticRegression and Hoeffding tree,
and scikit-learn's ``SGDClassifier.partial_fit``, on the first examples of those, each beside
liveprofile's FTRL on the same examples.

Prints one table per dataset: per system its events (or operations) per second, the ratio to
liveprofile, AUC, log loss and examples scored, with footnotes; ``--json`` also writes the
figures, the command and the version to a file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from report import print_table
from rich.console import Console
from river import linear_model, tree
from streams import (
    TooShort,
    capture,
    check_labels,
    delayed_labels,
    movielens_stream,
    read_events,
    refuse_uninformed,
    span_s,
    subset_ops,
)
from systems import (
    F64,
    Result,
    run_hashed,
    run_liveprofile,
    run_river_learner,
    run_river_pipeline,
    run_sklearn,
    run_vw,
)
from threadpoolctl import threadpool_limits

from liveprofile.config import PipelineConfig, RiskConfig
from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config
from liveprofile.events.schema import Event
from liveprofile.events.sources import Source
from liveprofile.learn.base import LEARN, PREDICT, PREDICT_LEARN, OpBatch
from liveprofile.learn.linear import FTRLProximal, LogisticOGD
from liveprofile.learn.registry import make_learner

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/ml-latest-small"
out = Console(width=None if Console().is_terminal else 120)
log = Console(stderr=True)


@dataclass
class Dataset:
    key: str
    name: str
    config: PipelineConfig
    task: str
    make_source: Callable[[int | None], Source]
    limit: int | None
    by_category: bool


@dataclass
class Stream:
    """One replay of a dataset and what every system is fed from it."""

    source: Source
    events: list[Event]
    ops: OpBatch
    labels: F64  # per prediction, in order; NaN where the window is still open at the end
    exposures: list[int]  # event position of each prediction
    reveal: Callable[[int], float]  # event time after which prediction k's label is learned
    delayed: bool


def check_span(ds: Dataset) -> None:
    """Refuse, before any work, a limited stream too short to measure the dataset's delayed
    task (:func:`streams.refuse_uninformed`; :func:`prepare` checks the derived labels too)."""
    task = next(t for t in ds.config.tasks if t.name == ds.task)
    if task.label.kind == "delayed" and ds.limit is not None:
        refuse_uninformed(task, span_s(ds.make_source(ds.limit), ds.config.run.batch_size))


def prepare(ds: Dataset) -> Stream:
    """Read the events, capture liveprofile's model operations, and derive the labels."""
    source = ds.make_source(ds.limit)
    events = read_events(source, ds.config.run.batch_size)
    ops = capture(ds.config, source)[ds.task]
    task = next(t for t in ds.config.tasks if t.name == ds.task)
    if task.label.kind == "delayed":
        found = delayed_labels(events, task)
        check_labels(ops, found)
        span = max(e.ts for e in events) - min(e.ts for e in events)
        refuse_uninformed(task, span, found)
        return Stream(
            source, events, ops, found.labels(), found.events, found.deadline.__getitem__, True
        )
    exposures = [pos for pos, e in enumerate(events) if e.type in task.on]
    if len(exposures) != len(ops) or any(k != PREDICT_LEARN for k in ops.kinds):
        raise RuntimeError("expected one predict-and-learn operation per example")
    return Stream(source, events, ops, np.asarray(ops.ys), exposures, lambda k: -math.inf, False)


def first_examples(stream: Stream, n: int) -> OpBatch:
    """The first ``n`` labelled examples as predict-then-learn operations (label known now)."""
    rows = np.flatnonzero(np.asarray(stream.ops.kinds) & PREDICT)
    known = ~np.isnan(stream.labels)
    picked = [int(r) for r in rows[known][:n]]
    ys = [float(y) for y in stream.labels[known][:n]]
    return subset_ops(stream.ops, picked, ys, PREDICT_LEARN)


def river_learners() -> list[tuple[str, Any]]:
    return [
        ("River LogisticRegression", linear_model.LogisticRegression()),
        ("River HoeffdingTreeClassifier", tree.HoeffdingTreeClassifier()),
    ]


def bench(ds: Dataset, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """All systems on one dataset: sections of rows, memory per profile, checks."""
    bits = ds.config.features.bits
    learner_cfg = next(t for t in ds.config.tasks if t.name == ds.task).learner

    def ftrl(ops: OpBatch, labels: F64) -> Result:
        return run_hashed(make_learner(learner_cfg, bits), ops, labels, "liveprofile FTRLProximal")

    # liveprofile end to end first, reading its source as the runner does, before this process
    # holds the event list and the captured operations the other systems need (a few GB on
    # the Complete Journey, which slow every allocation after them); the labels its
    # predictions are scored against are attached once they are derived
    log.log(f"[{ds.key}] liveprofile warm-up: 5,000 events (loads its compiled code)")
    run_liveprofile(ds.config, ds.make_source(5_000), ds.task, None, mkdir(work / "warm"))
    source = ds.make_source(ds.limit)
    log.log(f"[{ds.key}] liveprofile end to end")
    lp = run_liveprofile(ds.config, source, ds.task, None, work)
    log.log(f"[{ds.key}] reading events, capturing liveprofile's model operations")
    full = prepare(ds)
    n_events, n_ops = len(full.events), len(full.ops)
    lp = dataclasses.replace(lp, labels=full.labels if len(lp.preds) else lp.labels)
    log.log(f"[{ds.key}] River pipeline, {len(full.exposures):,} examples")
    pipeline = run_river_pipeline(
        full.events, full.exposures, full.labels, full.reveal, by_category=full.delayed
    )
    sections = [(f"End to end, {n_events:,} events", "events", [lp, pipeline])]

    log.log(f"[{ds.key}] learners alone, {n_ops:,} operations")
    alone = ftrl(full.ops, full.labels)
    ogd = run_hashed(LogisticOGD(bits=bits), full.ops, full.labels, "liveprofile LogisticOGD")
    learners = [alone, ogd, run_vw(full.ops, full.labels, bits)]
    if args.river_examples <= 0:
        for name, model in river_learners():
            log.log(f"[{ds.key}] {name}, {n_ops:,} operations")
            learners.append(run_river_learner(model, full.ops, full.labels, name))
    sections.append((f"Learner alone, {n_ops:,} operations", "ops", learners))

    if args.river_examples > 0:
        subset = first_examples(full, args.river_examples)
        ys = np.asarray(subset.ys)
        rows = [ftrl(subset, ys)]
        for name, model in river_learners():
            log.log(f"[{ds.key}] {name}, first {len(subset):,} examples")
            rows.append(run_river_learner(model, subset, ys, name))
        sections.append((f"Learner alone, first {len(subset):,} examples", "examples", rows))

    subset = first_examples(full, args.sklearn_events)
    log.log(f"[{ds.key}] scikit-learn, first {len(subset):,} examples")
    sections.append(
        (
            f"Learner alone, first {len(subset):,} examples",
            "examples",
            [ftrl(subset, np.asarray(subset.ys)), run_sklearn(subset, bits)],
        )
    )

    diff = float(np.max(np.abs(alone.preds - lp.preds))) if len(lp.preds) else math.nan
    kinds = np.asarray(full.ops.kinds)
    return {
        "sections": [
            {"title": title, "unit": unit, "rows": [row_dict(r, rows[0]) for r in rows]}
            for title, unit, rows in sections
        ],
        "memory": {
            k: lp.extra[k]
            for k in (
                "profiles",
                "sqlite_bytes_per_profile",
                "blob_bytes_per_profile",
                "resting_bytes_per_profile",
                "python_bytes_per_profile",
            )
        },
        "checks": {
            "runner_auc_binned": lp.extra["runner_auc"],
            "runner_logloss": lp.extra["runner_logloss"],
            "runner_n": lp.extra["runner_n"],
            "max_abs_diff_ftrl_alone_vs_end_to_end": diff,
            "labels_checked_against_liveprofile": full.delayed,
        },
        "ops": {
            "total": n_ops,
            "predict": int((kinds == PREDICT).sum()),
            "learn": int((kinds == LEARN).sum()),
            "predict_learn": int((kinds == PREDICT_LEARN).sum()),
            "features_per_op": len(full.ops.idx) / max(n_ops, 1),
        },
        "events": n_events,
        "examples": len(full.exposures),
        "delayed": full.delayed,
        "batch_size": ds.config.run.batch_size,
    }


def row_dict(r: Result, ref: Result) -> dict[str, Any]:
    n, auc, logloss = r.metrics()
    return {
        "system": r.system,
        "units": r.units,
        "seconds": r.seconds,
        "per_s": r.rate,
        "vs_liveprofile": r.rate / ref.rate if ref.rate > 0 else math.nan,
        "auc": auc,
        "logloss": logloss,
        "n": n,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        choices=["movielens", "completejourney", "both"],
        default="both",
        help="the dataset(s) to replay (default: %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="events per dataset, in time order (default: all)",
    )
    parser.add_argument(
        "--cj-limit",
        type=int,
        default=300_000,
        metavar="N",
        help="Complete Journey events (default: 300,000; more than 112,012, two label windows)",
    )
    parser.add_argument(
        "--river-examples",
        type=int,
        default=20_000,
        metavar="N",
        help="examples for River's learners alone, whose cost per example grows "
        "with the model (default: 20,000; 0: all operations, which takes about 4 minutes on "
        "MovieLens and much longer on Complete Journey)",
    )
    parser.add_argument(
        "--sklearn-events",
        type=int,
        default=3000,
        metavar="N",
        help="examples for SGDClassifier.partial_fit (default: 3,000)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the results to this JSON file",
    )
    parser.add_argument(
        "--against",
        default=None,
        metavar="REF",
        help="also run commit REF (extracted with git archive) and print both side by side, "
        "runs alternating, with the ratio (see benchmarks/against.py)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="with --against: runs of each side, alternating (default: 1)",
    )
    parser.add_argument(
        "--config-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change liveprofile's configuration on every dataset, e.g. "
        "'features.behaviour=false' (KEY: dotted path in the TOML config; VALUE: a TOML value, "
        "else a string; repeatable); with --against, on this checkout's side only",
    )
    parser.add_argument(
        "--no-behaviour",
        action="store_true",
        help="shorthand for --config-override features.behaviour=false --config-override "
        "profile.behaviour_keys=0: no behaviour features, as before they existed; with "
        "--against, on this checkout's side only",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA,
        help=f"MovieLens ml-latest-small folder (default: {DEFAULT_DATA})",
    )
    return parser.parse_args(argv)


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


NO_BEHAVIOUR = ("features.behaviour=false", "profile.behaviour_keys=0")


def overridden(config: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """``config`` with each ``KEY=VALUE`` of ``overrides`` set (KEY a dotted path).

    >>> c = overridden(PipelineConfig(), ["features.behaviour=false", "run.batch_size=500"])
    >>> c.features.behaviour, c.run.batch_size
    (False, 500)
    """
    data = config.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--config-override wants KEY=VALUE, got {item!r}")
        try:
            value: Any = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        *path, last = key.split(".")
        node = data
        for part in path:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"--config-override: no section {part!r} in {key!r}")
            node = node[part]
        if last not in node:
            raise SystemExit(f"--config-override: no key {key!r} in the configuration")
        node[last] = value
    return PipelineConfig.from_dict(data)


def overrides_of(args: argparse.Namespace) -> list[str]:
    return [*(NO_BEHAVIOUR if args.no_behaviour else ()), *args.config_override]


def datasets(args: argparse.Namespace, work: Path) -> list[Dataset]:
    chosen = []
    if args.dataset in ("movielens", "both"):
        chosen.append(
            Dataset(
                "movielens",
                "MovieLens ml-latest-small (task 'like': rating >= 4)",
                # velocity counts feed risk rules, not the model; without them the replay
                # takes the compiled path
                overridden(PipelineConfig(risk=RiskConfig(velocity=False)), overrides_of(args)),
                "like",
                lambda n: movielens_stream(args.data_dir, work / f"ml-{n}", n),
                args.limit,
                False,
            )
        )
    if args.dataset in ("completejourney", "both"):
        cj = args.cj_limit if args.limit is None else min(args.limit, args.cj_limit)
        chosen.append(
            Dataset(
                "completejourney",
                "Complete Journey (task 'repurchase': same category again within 14 days)",
                overridden(quickstart_config(), overrides_of(args)),
                "repurchase",
                lambda n: CompleteJourneySource(limit=n),
                cj,
                True,
            )
        )
    return chosen


def source_version() -> str:
    """The commit of the code under test, marked dirty if ``src`` has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in src' if dirty else ''}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.against is not None:
        import against

        return against.main(args, out, log)
    started = time.perf_counter()
    warm = OpBatch()
    warm.add(PREDICT_LEARN, [1], [1.0], 1.0)
    FTRLProximal(bits=8).run_ops(warm)
    LogisticOGD(bits=8).run_ops(warm)
    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "config_overrides": overrides_of(args),
        "liveprofile": source_version(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "datasets": {},
    }
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        chosen = datasets(args, Path(tmp))
        try:
            for ds in chosen:
                check_span(ds)
            for ds in chosen:
                report = bench(ds, args, Path(tmp) / ds.task)
                results["datasets"][ds.name] = report
                print_table(out, ds.name, report)
        except TooShort as exc:
            hint = " (--cj-limit above 112,012)" if ds.key == "completejourney" else ""
            log.print(f"[red]{ds.name}: {exc}{hint}[/red]")
            return 2
    results["seconds"] = time.perf_counter() - started
    out.print(f"[dim]liveprofile {results['liveprofile']}; total {results['seconds']:.0f} s[/dim]")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Behaviour features on the exposed item and category, off (as before) and on, side by side in
one run.

Each dataset is replayed through a fresh core (the compiled step, the default) once per setting,
and each task is evaluated prequentially (predict at exposure time, learn when the label is
known): ``auc``, ``logloss`` and ``n`` are the task's own prequential metrics. The settings:

- ``off``: ``features.behaviour = false`` and ``profile.behaviour_keys = 0`` (no behaviour kept,
  no features: the pipeline as it was);
- ``on``: the defaults (``behaviour_keys = 32``, the features on);
- ``on N`` (with ``--keys N ...``): the features on, ``behaviour_keys = N``;
- ``value`` (MovieLens only): on, with ``profile.behaviour_value = true``: per movie and genre
  the decayed sum of the ratings as well, read as the mean rating there (``b_category_value``).

Events/s is the replay alone (``Core.step``) on the Complete Journey, the two settings
interleaved ``--repeat`` times, best run kept (other processes on the machine add noise; the
interleaving spreads it over both); so are the events per CPU second of the process, after the
first batch (a loaded machine slows the wall clock far more than the CPU time).

Datasets: the Complete Journey (the quick start's ``repurchase`` task: the same household buys
the same product category within 14 days; ``--cj-limit`` transactions), MovieLens ratings (the
default ``like`` task: rating >= 4; a user rates a movie once, so the item map never helps; the
first genre is the category, the others tags, as ``movielens_source(first_genre_category=True)``
reads them, and ``rate`` is the type counted per item and category: both settings see the same
events and topics) and the synthetic shop (the default ``convert`` and ``repurchase`` tasks;
``--shop-users`` users over ``--shop-days`` days, seeds ``--seeds``).

    .venv/bin/python benchmarks/behaviour.py
    .venv/bin/python benchmarks/behaviour.py --cj-limit 0 --seeds 0 1 2   # all of it
    .venv/bin/python benchmarks/behaviour.py --keys 16 8   # fewer keys per map as well

Prints, per dataset, each setting's events/s (and on the Complete Journey the on/off ratio) and a
table with a row per task and setting; nothing is written.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from exposures import chunks, datasets
from timed import dataset_options, timed_replay

from liveprofile.config import PipelineConfig
from liveprofile.datasets.movielens import movielens_source
from liveprofile.events import Event


def movielens(data_dir: str) -> tuple[PipelineConfig, list[list[Event]], list[Event]]:
    """MovieLens with its first genre as the category and ``rate`` counted as behaviour."""
    source = movielens_source(Path(data_dir) / "ratings.csv", first_genre_category=True)
    events = sorted(
        (e for b in source.batches(0, 50_000) for e in b.events), key=lambda e: (e.ts, e.event_id)
    )
    config = PipelineConfig()
    profile = msgspec.structs.replace(config.profile, behaviour_types=["rate"])
    return msgspec.structs.replace(config, profile=profile), chunks(events, 20_000), events


def with_behaviour(
    config: PipelineConfig, on: bool, keys: int | None = None, value: bool = False
) -> PipelineConfig:
    """``config`` with the behaviour kept (in ``keys`` keys a map, when given; with the
    values' sums when ``value``) and turned into features, or neither."""
    if on:
        if keys is None and not value:
            return config
        profile = msgspec.structs.replace(
            config.profile,
            behaviour_keys=config.profile.behaviour_keys if keys is None else keys,
            behaviour_value=value,
        )
        return msgspec.structs.replace(config, profile=profile)
    profile = msgspec.structs.replace(config.profile, behaviour_keys=0)
    features = msgspec.structs.replace(config.features, behaviour=False)
    return msgspec.structs.replace(config, profile=profile, features=features)


def replay(config: PipelineConfig, batches: Sequence[Any]) -> dict[str, Any]:
    """Replay ``batches``; per task, its prequential metrics; the replay's events/s, and its
    events per CPU second after the first batch (``cpu``: less swayed by other processes on
    the machine than the wall clock)."""
    ticks: list[float] = []
    core, state, eps = timed_replay(config, batches, lambda _: ticks.append(time.process_time()))
    assert core.compiled is not None, "the compiled step takes every pipeline here"
    tasks = {name: task.metrics.summary() for name, task in state.tasks.items()}
    later = sum(len(b) for b in batches[1:])
    cpu = later / (ticks[-1] - ticks[0]) if len(ticks) > 1 else float("nan")
    return {"tasks": tasks, "eps": eps, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    dataset_options(parser, "the settings", repeat=3)
    parser.add_argument(
        "--data-dir",
        default="/work/shared/data/ml-latest-small",
        help="MovieLens folder holding ratings.csv (default: %(default)s)",
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="replay the Complete Journey only and print its events/s per setting",
    )
    parser.add_argument(
        "--keys",
        type=int,
        nargs="*",
        default=[],
        help="more 'on' settings, one per N: profile.behaviour_keys = N (default: none)",
    )
    parser.add_argument(
        "--datasets",
        nargs="*",
        default=[],
        help="only the datasets whose names start with these, e.g. MovieLens or 'synthetic "
        "shop' (default: all)",
    )
    args = parser.parse_args()
    common: dict[str, tuple[bool, int | None, bool]] = {
        "off": (False, None, False),
        "on": (True, None, False),
    }
    common.update({f"on {n}": (True, n, False) for n in args.keys})
    for name, base, batches, events in datasets(args):
        settings = dict(common)
        if name == "MovieLens":
            base, batches, events = movielens(args.data_dir)
            settings["value"] = (True, None, True)
        if args.datasets and not any(name.startswith(d) for d in args.datasets):
            continue
        print(f"\n{name}: {len(events):,} events, batches of {base.run.batch_size:,}")
        runs: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeat if name == "Complete Journey" else 1):
            for label, (on, keys, value) in settings.items():
                got = replay(with_behaviour(base, on, keys, value), batches)
                best = runs.setdefault(label, got)
                best["eps"] = max(best["eps"], got["eps"])
                best["cpu"] = max(best["cpu"], got["cpu"])
        for label in settings:
            run = runs[label]
            print(
                f"  behaviour {label:>5}: {run['eps']:,.0f} events/s, "
                f"{run['cpu']:,.0f} events per CPU second"
            )
        if name == "Complete Journey":
            for what in ("eps", "cpu"):
                ratio = runs["on"][what] / runs["off"][what]
                print(
                    f"  {'wall' if what == 'eps' else 'CPU'} throughput on/off: {ratio:.3f} "
                    f"({(1 - ratio) * 100:+.1f}% slower on)"
                )
        if args.throughput_only:
            continue
        print(f"  {'task':<11} {'behaviour':>9} {'n':>9} {'auc':>7} {'logloss':>8}")
        for task in base.tasks:
            for label in settings:
                m = runs[label]["tasks"][task.name]
                if not m["n"]:
                    continue
                print(
                    f"  {task.name:<11} {label:>9} {m['n']:>9,} {m['auc']:>7.4f} "
                    f"{m['logloss']:>8.4f}"
                )


if __name__ == "__main__":
    main()

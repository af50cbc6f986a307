"""What identity links cost: a shop where visitors log in at their first purchase, against the
same events under user ids.

From the repository root::

    .venv/bin/python benchmarks/identity.py --users 5000 --repeat 2 --json /tmp/identity.json
    .venv/bin/python benchmarks/identity.py --returning --repeat 3

``--returning`` adds a third stream beside the two: a shop whose customers come back
(``liveprofile.datasets.logins.returning_logins``): every session browses under an anonymous id
of its own and logs in at its first cart or purchase, so most logins (the table's "into
profiles" column) are into a user who already has a profile, which the kernel folds into the
user's row in place (``engine/foldinto.py``) within its call (``engine/loginrun.py``). Its CPU
is compared with the same events under user ids, as the first-purchase stream's is.

``--interleave`` replays the streams side by side in one process instead, batch by batch (a
batch of one stream, then the same batch of the other), and counts each stream's CPU over its
own batches: a machine whose speed drifts over seconds (another tenant) slows both alike, so
the ratio is far steadier than that of whole replays run one after the other. Each round
prints its ratio; the table shows their median and range.

``--phases`` also prints the CPU seconds of the step's phases per stream
(:mod:`phases`): where the login stream spends what the other does not.

The synthetic generator's events (``--users`` users over ``--days`` days) are written twice as
JSON lines: as generated (every event under its user id), and as a shop with logins sends them
(``liveprofile.datasets.logins.with_logins``: each user anonymous until their first purchase,
which links the two ids and folds the visitor's profile into the user's). Both replay through
the local runner into a fresh SQLite store, ``--repeat`` times each in alternating order, with
the default (compiled) engine; the table shows the best time of each, in wall-clock seconds and
in CPU seconds of the process (steadier on a shared machine), and ("by round") the median and
range of each replay's CPU against the user-id replay of its round. Every batch takes the
compiled step: the kernel runs each batch in one call, folding each visitor into its new user
on the rows (``engine/loginrun.py``), and each visitor into a user who has a profile on the
rows too (``engine/foldinto.py``); the Python lifecycle runs only where that does not apply
(e.g. a profile idle past its TTL).

The "Python stops" column counts the events of a replay at which the kernel returned to Python
for the lifecycle (a login it could not fold, a ``$merge``, an erasure, an expiry).

Prints the table (and with ``--phases`` the phases' table); ``--json`` also writes the figures
and every run to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import phases
from rich.console import Console
from rich.table import Table

from liveprofile.config import LabelConfig, PipelineConfig, RunConfig, TaskConfig
from liveprofile.datasets.logins import returning_logins, returning_share, with_logins
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.gc_tuning import fewer_collections
from liveprofile.engine.local import LocalRunner, RunStats
from liveprofile.events.sources import JsonlSource
from liveprofile.store.sqlite import SQLiteStore

TASKS = [
    TaskConfig(
        "convert",
        on=["view"],
        label=LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="1d"),
    ),
    TaskConfig("carted", on=["view"], label=LabelConfig(kind="type", positive=["cart"])),
]


def _runner(config: PipelineConfig, folder: Path, name: str) -> LocalRunner:
    """A local runner into a fresh SQLite store ``name``.db in ``folder``."""
    store = SQLiteStore(folder / f"{name}.db")
    store.setup()
    return LocalRunner(config, store, folder / f"{name}-dead.jsonl")


def replay(config: PipelineConfig, events: Path, folder: Path) -> dict[str, Any]:
    runner = _runner(config, folder, "profiles")
    started, cpu = time.perf_counter(), time.process_time()
    stats = runner.run(JsonlSource(events))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    links = runner.state.checkpoint.links
    compiled = runner.core.compiled
    # the events at which the kernel returned to Python for the lifecycle (links, merges)
    paused = 0 if compiled is None else compiled.paused
    profiles = sum(1 for _ in runner.store.scan("profile"))
    runner.close()
    return {
        "events": stats.events,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "events_per_s": round(stats.events / seconds),
        "links": links,
        "profiles": profiles,
        "python_stops": paused,
    }


def side_by_side(config: PipelineConfig, paths: dict[str, Path], folder: Path) -> dict[str, float]:
    """Replay the streams of ``paths`` batch by batch in turn, each into a fresh SQLite store;
    return each stream's CPU seconds over its own batches (reading them included)."""
    runners, sources, batches = {}, {}, {}
    cpu = dict.fromkeys(paths, 0.0)
    for name, path in paths.items():
        runners[name] = _runner(config, folder, name.replace(" ", "_"))
        sources[name] = JsonlSource(path)
        batches[name] = sources[name].batches(0, config.run.batch_size)
    stats = {name: RunStats() for name in paths}
    live = list(paths)
    with fewer_collections():
        while live:
            for name in list(live):
                started = time.process_time()
                batch = next(batches[name], None)
                if batch is not None:
                    runners[name].process(sources[name].name, batch, stats[name])
                cpu[name] += time.process_time() - started
                if batch is None:
                    live.remove(name)
    for runner in runners.values():
        runner.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=5000, help="Synthetic users (default 5000).")
    parser.add_argument("--days", type=int, default=28, help="Days of events (default 28).")
    parser.add_argument(
        "--batch", type=int, default=20_000, help="Events per batch (default 20000)."
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Runs of each stream, alternating; the best is shown (default 1).",
    )
    parser.add_argument(
        "--returning",
        action="store_true",
        help="Also replay a shop of returning customers: every session logs in at its first cart "
        "or purchase, mostly into users who already have a profile.",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="Replay the streams side by side in one process, batch by batch, and compare "
        "their CPU over their own batches (steadier on a shared machine); --repeat rounds.",
    )
    parser.add_argument("--json", type=Path, help="Also write the figures to this JSON file.")
    parser.add_argument(
        "--phases", action="store_true", help="Also time the step's phases (benchmarks/phases.py)."
    )
    args = parser.parse_args()
    if args.phases:
        phases.instrument()
    config = PipelineConfig(tasks=TASKS, run=RunConfig(batch_size=args.batch))
    synthetic = SyntheticConfig(users=args.users, days=args.days, seed=7)
    runs: dict[str, list[dict[str, Any]]] = {"user ids": [], "logins": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        encode = msgspec.json.encode
        paths = {"user ids": folder / "plain.jsonl", "logins": folder / "logins.jsonl"}
        paths["user ids"].write_bytes(b"\n".join(encode(e) for e in generate(synthetic)) + b"\n")
        logins = with_logins(generate(synthetic))
        paths["logins"].write_bytes(b"\n".join(encode(e) for e in logins) + b"\n")
        share = {"user ids": 0.0, "logins": returning_share(with_logins(generate(synthetic)))}
        if args.returning:
            paths["returning"], runs["returning"] = folder / "returning.jsonl", []
            returning = list(returning_logins(generate(synthetic)))
            share["returning"] = returning_share(returning)
            paths["returning"].write_bytes(b"\n".join(encode(e) for e in returning) + b"\n")
        if args.interleave:
            interleaved(config, paths, folder, args)
            return
        for k in range(args.repeat):
            for name, path in paths.items():
                run_dir = folder / f"{name.replace(' ', '_')}-{k}"
                run_dir.mkdir()
                phases.STREAM[0] = name
                runs[name].append(replay(config, path, run_dir))
    best = {name: min(r, key=lambda x: x["seconds"]) for name, r in runs.items()}
    base = best["user ids"]["seconds"]
    table = Table(title=f"Synthetic shop, {best['user ids']['events']:,} events, batches of "
                  f"{args.batch:,}")  # fmt: skip
    cpu = {name: min(x["cpu_seconds"] for x in r) for name, r in runs.items()}
    # each replay's CPU against the user-id replay of its round: the best-of figures above
    # hide how far replays of one code spread on a busy machine
    base_cpu = [b["cpu_seconds"] for b in runs["user ids"]]
    paired = {
        name: sorted(x["cpu_seconds"] / b - 1 for x, b in zip(r, base_cpu, strict=True))
        for name, r in runs.items()
    }
    columns = ("stream", "seconds", "events/s", "vs user ids", "CPU s", "vs user ids ",
               "by round", "links", "into profiles", "profiles", "Python stops")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "stream" else "right")
    for name, r in best.items():
        table.add_row(
            name,
            f"{r['seconds']:.1f}",
            f"{r['events_per_s']:,}",
            "-" if name == "user ids" else f"{(r['seconds'] / base - 1) * 100:+.1f}%",
            f"{cpu[name]:.1f}",
            "-" if name == "user ids" else f"{(cpu[name] / cpu['user ids'] - 1) * 100:+.1f}%",
            "-" if name == "user ids" else _spread(paired[name]),
            f"{r['links']:,}",
            "-" if name == "user ids" else f"{share[name]:.0%}",
            f"{r['profiles']:,}",
            f"{r['python_stops']:,}",
        )
    Console(width=140).print(table)
    if args.phases:
        Console(width=120).print(phases.table(list(paths), args.repeat))
    _write(args, paired, into_profiles=share, runs=runs)


def interleaved(
    config: PipelineConfig, paths: dict[str, Path], folder: Path, args: argparse.Namespace
) -> None:
    """``--interleave``: ``args.repeat`` rounds of :func:`side_by_side`, each stream's CPU
    against the user-id stream's of its round, printed and (``--json``) written."""
    rounds: list[dict[str, float]] = []
    for k in range(args.repeat):
        run_dir = folder / f"side-{k}"
        run_dir.mkdir()
        cpu = side_by_side(config, paths, run_dir)
        rounds.append(cpu)
        Console().print(
            f"round {k + 1}: " + ", ".join(f"{name} {s:.2f} CPU s" for name, s in cpu.items())
        )
    table = Table(title=f"Side by side, batch by batch, batches of {args.batch:,}")
    for column in ("stream", "CPU s (median)", "vs user ids, by round"):
        table.add_column(column, justify="left" if column == "stream" else "right")
    ratios: dict[str, list[float]] = {}
    for name in paths:
        ratios[name] = sorted(r[name] / r["user ids"] - 1 for r in rounds)
        table.add_row(
            name,
            f"{statistics.median(r[name] for r in rounds):.2f}",
            "-" if name == "user ids" else _spread(ratios[name]),
        )
    Console(width=120).print(table)
    _write(args, ratios, rounds=rounds)


def _write(args: argparse.Namespace, by_round: dict[str, list[float]], **figures: Any) -> None:
    """With ``--json``, write the machine, the arguments, each stream's CPU against the user-id
    stream's by round, and ``figures``."""
    if not args.json:
        return
    result = {"machine": platform.platform(), "args": vars(args) | {"json": str(args.json)}}
    result["cpu_by_round"] = {name: [round(x, 4) for x in r] for name, r in by_round.items()}
    args.json.write_text(json.dumps(result | figures, indent=2) + "\n")


def _spread(ratios: list[float]) -> str:
    """The median of sorted ``ratios`` and their range, in percent."""
    mid = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{mid * 100:+.1f}%"
    return f"{mid * 100:+.1f}% ({ratios[0] * 100:+.0f}..{ratios[-1] * 100:+.0f})"


if __name__ == "__main__":
    main()

"""CPU time of the step on synthetic events, in memory.

From the repository root::

    .venv/bin/python benchmarks/steps.py --users 600 --batch 5000 --rounds 3

The synthetic generator's events (``--users`` users over ``--days`` days, seed 7, with
the default profile, behaviour features and two tasks, one delayed) are parsed once and stepped
through ``Core`` in batches of ``--batch``, ``--rounds`` times, after a warm-up of 2,000 events
(which compiles the kernel if numba's cache is empty). ``time.process_time`` is read around each
run, so the figures are CPU seconds, which hold up on a shared machine better than wall time.
Prints the best round's events/s. No store is involved: this is the step alone.
To compare two commits, run this file with ``PYTHONPATH`` pointing at each one's ``src`` (and
a ``NUMBA_CACHE_DIR`` of its own), alternating.
"""

from __future__ import annotations

import argparse
import time

import msgspec

from liveprofile.config import LabelConfig, PipelineConfig, TaskConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.core import Core
from liveprofile.events import Event, EventParser

TASKS = [
    TaskConfig(
        "convert",
        on=["view"],
        label=LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="1d"),
    ),
    TaskConfig("carted", on=["view"], label=LabelConfig(kind="type", positive=["cart"])),
]


def stepped(events: list[Event], batch: int) -> float:
    """CPU seconds to step ``events`` through a new state in batches of ``batch``."""
    config = PipelineConfig(tasks=TASKS)
    core = Core(config)
    state = core.new_state()
    started = time.process_time()
    for k in range(0, len(events), batch):
        core.step(state, events[k : k + batch])
    return time.process_time() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=600, help="synthetic users")
    parser.add_argument("--days", type=int, default=14, help="days of events")
    parser.add_argument("--batch", type=int, default=5000, help="events per step")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (best kept)")
    args = parser.parse_args(argv)
    parse = EventParser().parse_json
    raw = generate(SyntheticConfig(users=args.users, days=args.days, seed=7))
    events = [parse(msgspec.json.encode(e)) for e in raw]
    stepped(events[:2000], 500)
    seconds = min(stepped(events, args.batch) for _ in range(args.rounds))
    rate = len(events) / seconds
    print(f"step: {len(events):,} events, {seconds:.2f} s CPU, {rate:,.0f} events/s")


if __name__ == "__main__":
    main()

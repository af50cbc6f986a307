"""CPU time of the compiled step and of its kernel alone, on synthetic events.

From the repository root::

    .venv/bin/python benchmarks/kernel.py --users 3000 --batch 20000

The synthetic generator's events (``--users`` users over 28 days, seed 7; 313k events for 3000
users) are parsed once, then stepped through ``Core`` with the compiled engine in batches of
``--batch``, after a warm-up step of 2,000 events on a separate state (which compiles the code
if numba's cache is empty: its CPU time is printed too). ``time.process_time`` is read around
each call of ``kernel.run`` and around the whole run, so the figures are CPU seconds and hold
up on a shared machine better than wall time. Velocity counts are off, as they are counted in
Python after the kernel. To compare two commits, run this file with ``PYTHONPATH`` pointing at
each one's ``src`` (and a ``NUMBA_CACHE_DIR`` of its own), alternating.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from liveprofile.config import LabelConfig, PipelineConfig, RiskConfig, TaskConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine import kernel
from liveprofile.engine.core import Core
from liveprofile.events import EventParser

TASKS = [
    TaskConfig(
        "convert",
        on=["view"],
        label=LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="1d"),
    ),
    TaskConfig("carted", on=["view"], label=LabelConfig(kind="type", positive=["cart"])),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=3000, help="Synthetic users (default 3000).")
    parser.add_argument("--batch", type=int, default=20_000, help="Events per batch.")
    args = parser.parse_args()
    events_parser = EventParser()
    synthetic = SyntheticConfig(users=args.users, days=28, seed=7)
    events = [events_parser.parse_fields(e) for e in generate(synthetic)]
    config = PipelineConfig(tasks=TASKS, risk=RiskConfig(velocity=False))
    run = kernel.run
    spent = [0.0]

    def timed(*records: Any) -> Any:
        started = time.process_time()
        result = run(*records)
        spent[0] += time.process_time() - started
        return result

    kernel.run = timed  # the compiled step calls kernel.run through the module
    started = time.process_time()
    core = Core(config)
    core.step(core.new_state(), events[:2000])
    warm_up = time.process_time() - started
    core = Core(config)
    state = core.new_state()
    spent[0] = 0.0
    started = time.process_time()
    for k in range(0, len(events), args.batch):
        core.step(state, events[k : k + args.batch])
    step = time.process_time() - started
    print(
        f"{len(events):,} events: step {step:.2f} s CPU ({len(events) / step:,.0f} events/s), "
        f"kernel {spent[0]:.2f} s CPU; warm-up step {warm_up:.1f} s CPU"
    )


if __name__ == "__main__":
    main()

"""CPU time of the compiled step, of its kernel alone, and of ``kernel.advance`` at stops.

From the repository root::

    .venv/bin/python benchmarks/kernel.py --users 3000 --batch 20000 --rounds 2

The synthetic generator's events (``--users`` users over 28 days, seed 7; 313k events for 3000
users) are parsed once, twice over: under user ids, and as a shop with logins sends them
(``liveprofile.datasets.logins.with_logins``: each user anonymous until their first purchase).
Each is stepped through ``Core`` with the compiled engine in batches of ``--batch``, after a
warm-up step of 2,000 events on a separate state (which compiles the code if numba's cache is
empty), ``--rounds`` times in alternating order. ``time.process_time`` is read around each call
of ``kernel.run`` and of ``kernel.advance`` (called from Python at each stop of the login
stream, :mod:`liveprofile.engine.links`: it closes the pending examples the watermark makes due
before the Python lifecycle runs) and around the whole run, so the figures are CPU seconds and
hold up on a shared machine better than wall time. Prints one line per stream, its best round:
events, the step's CPU seconds and events/s, ``kernel.run``'s seconds, and ``kernel.advance``'s
stops, seconds and share of the step; nothing is written.
Velocity counts are off, as they are counted in Python after the kernel. To compare two
commits, run this file with ``PYTHONPATH`` pointing at each one's ``src`` (and a
``NUMBA_CACHE_DIR`` of its own), alternating.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from liveprofile.config import LabelConfig, PipelineConfig, RiskConfig, TaskConfig
from liveprofile.datasets.logins import with_logins
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine import kernel, links
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
#: CPU seconds spent in each compiled function, and its calls
SPENT: dict[str, list[float]] = {"run": [0.0, 0], "advance": [0.0, 0]}


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*records: Any) -> Any:
        started = time.process_time()
        result = function(*records)
        SPENT[name][0] += time.process_time() - started
        SPENT[name][1] += 1
        return result

    return call


def patch() -> None:
    """Time ``kernel.run`` where the compiled step calls it, and the machine code of both
    functions :func:`links.compiled_for` hands to the stops."""
    functions = {"run": kernel.run, "advance": kernel.advance}
    kernel.run = timed("run", kernel.run)
    compiled_for = links.compiled_for

    def timed_compiled_for(function: Any, args: tuple[Any, ...]) -> Callable[..., Any]:
        name = "advance" if function is functions["advance"] else "run"
        return timed(name, compiled_for(functions[name], args))

    links.compiled_for = timed_compiled_for


def step_all(config: PipelineConfig, events: list[Event], batch: int) -> dict[str, float]:
    core = Core(config)
    core.step(core.new_state(), events[:2000])  # warm-up (compiles if the cache is empty)
    core = Core(config)
    state = core.new_state()
    for value in SPENT.values():
        value[:] = [0.0, 0]
    started = time.process_time()
    for k in range(0, len(events), batch):
        core.step(state, events[k : k + batch])
    step = time.process_time() - started
    assert core.compiled is not None
    return {
        "step": step,
        "run": SPENT["run"][0],
        "advance": SPENT["advance"][0],
        "advance_calls": SPENT["advance"][1],
        "stops": core.compiled.stopped,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=3000, help="Synthetic users (default 3000).")
    parser.add_argument(
        "--batch", type=int, default=20_000, help="Events per batch (default 20000)."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="Rounds of both streams, alternating; the best is shown (default 1).",
    )
    args = parser.parse_args()
    events_parser = EventParser()
    synthetic = SyntheticConfig(users=args.users, days=28, seed=7)
    streams = {
        "user ids": [events_parser.parse_fields(e) for e in generate(synthetic)],
        "logins": [events_parser.parse_fields(e) for e in with_logins(generate(synthetic))],
    }
    config = PipelineConfig(tasks=TASKS, risk=RiskConfig(velocity=False))
    patch()
    best: dict[str, dict[str, float]] = {}
    for k in range(args.rounds):
        for name in list(streams) if k % 2 == 0 else list(streams)[::-1]:
            r = step_all(config, streams[name], args.batch)
            if name not in best or r["step"] < best[name]["step"]:
                best[name] = r
    for name, r in best.items():
        n = len(streams[name])
        print(
            f"{name}: {n:,} events, step {r['step']:.2f} s CPU ({n / r['step']:,.0f} events/s), "
            f"kernel.run {r['run']:.2f} s, kernel.advance at {r['stops']:,} stops "
            f"{r['advance']:.3f} s ({r['advance'] / n * 1e9:,.0f} ns per event, "
            f"{r['advance'] / r['step']:.1%} of the step)"
        )


if __name__ == "__main__":
    main()

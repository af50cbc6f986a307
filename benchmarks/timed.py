"""A timed replay through the core, shared by the learning benchmarks.

Only ``Core.step`` is timed: whatever a benchmark does with each batch's output (``on_output``)
runs outside the timed window, so events/s compare the step alone.

Imported by ``behaviour.py``, ``delayed.py``, ``exposures.py`` and ``tuning.py`` (the first
three also take their common options from :func:`dataset_options`); not a script, it takes no
arguments.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

from liveprofile.config import PipelineConfig
from liveprofile.engine.core import Core


def timed_replay(
    config: PipelineConfig,
    batches: Sequence[Sequence[Any]],
    on_output: Callable[[Any], None] | None = None,
) -> tuple[Core, Any, float]:
    """Replay ``batches`` (event sequences) into a new state; the core, the final state and the
    events/s of the step."""
    core = Core(config)
    state = core.new_state()
    elapsed, n = 0.0, 0
    for events in batches:
        t0 = time.perf_counter()
        out = core.step(state, events)
        elapsed += time.perf_counter() - t0
        n += len(events)
        if on_output is not None:
            on_output(out)
    return core, state, n / elapsed if elapsed else float("nan")


def dataset_options(
    parser: argparse.ArgumentParser, settings: str, repeat: int, skip_cj: bool = False
) -> None:
    """The options the learning benchmarks share: how much of the Complete Journey, which
    synthetic shops, how many interleaved timing runs of ``settings``."""
    skip = ", -1: skip the dataset" if skip_cj else ""
    parser.add_argument(
        "--cj-limit",
        type=int,
        default=600_000,
        help=f"Complete Journey transactions replayed; 0: every one{skip} (default: %(default)s)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=[0, 1],
        help="synthetic shop seeds, one replay each; --seeds with no value: no shop (default: 0 1)",
    )
    parser.add_argument(
        "--shop-users",
        type=int,
        default=2000,
        help="users of the synthetic shop (default: %(default)s)",
    )
    parser.add_argument(
        "--shop-days",
        type=int,
        default=56,
        help="days of event time of the synthetic shop; more than 14, so that repurchase "
        "learns before it predicts (default: %(default)s)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=repeat,
        help=f"interleaved runs of {settings} on the Complete Journey, best events/s kept "
        "(default: %(default)s)",
    )

"""A timed replay through the core, shared by the learning benchmarks.

Only ``Core.step`` is timed: whatever a benchmark does with each batch's output (``on_output``)
runs outside the timed window, so events/s compare the step alone.

Imported by ``behaviour.py``, ``delayed.py``, ``exposures.py`` and ``tuning.py``; not a
script, it takes no arguments.
"""

from __future__ import annotations

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

"""CPU seconds of the compiled step's phases, for ``benchmarks/identity.py --phases``.

:func:`instrument` wraps the step's methods so that each call adds its process CPU time to
the phase of the stream being replayed (:data:`STREAM`); :func:`table` shows them side by side.
Nested phases are included in their callers (a stop includes its write-back and its fold).

Imported by ``identity.py``; not a script, it takes no arguments.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from rich.table import Table

from liveprofile.engine import compiled, links, local, loginrun, riskcounts, step

#: the stream being replayed, set by the caller before each replay
STREAM = ["user ids"]
#: CPU seconds and calls per stream and phase
SPENT: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0]))

PHASES = [
    ("screen (before the step)", local, "screen"),
    ("the step", compiled.CompiledStep, "step"),
    ("  kernel with the folds, one call to each stop (logins)", links, "run_with_folds"),
    ("    folds' bookkeeping (Python)", loginrun, "book_folds"),
    ("  kernel stretches (logins)", links.Stops, "_kernel"),
    ("  stops: Python lifecycle", links.Stops, "_stop"),
    ("    login into a new user, on the rows", links, "fold_visitor"),
    ("    rows written back", links.Stops, "_flush"),
    ("    velocity counts before", riskcounts.RiskCounts, "rows"),
    ("    fold (merge_profiles)", step.Step, "_fold"),
    ("    rows reloaded", links.Stops, "_reload"),
    ("  per-batch stop set-up", links.Stops, "__init__"),
    ("  velocity counts and anomaly scores, at stops", riskcounts.RiskCounts, "upto"),
    ("  velocity counts and anomaly scores, after the kernel", compiled, "count_velocity"),
    ("  rows back to profiles", compiled, "store_users"),
]


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent = SPENT[STREAM[0]][name]
            spent[0] += time.process_time() - started
            spent[1] += 1

    return timed


class _Kernel:
    """The kernel module as the step sees it, with ``run`` timed (the plain stream's kernel)."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self.run = _timed("  kernel (user ids: one call a batch)", module.run)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def instrument() -> None:
    for name, owner, attribute in PHASES:
        setattr(owner, attribute, _timed(name, getattr(owner, attribute)))
    compiled.kernel = _Kernel(compiled.kernel)  # type: ignore[assignment]


def table(streams: list[str], runs: int) -> Table:
    """Each phase's CPU seconds per run of each stream."""
    out = Table(title=f"CPU seconds per replay, by phase (mean of {runs})")
    out.add_column("phase")
    for stream in streams:
        out.add_column(stream, justify="right")
    out.add_column(f"calls ({streams[-1]})", justify="right")
    names = [name for name, _, _ in PHASES]
    names.insert(2, "  kernel (user ids: one call a batch)")
    for name in names:
        cells = [f"{SPENT[s][name][0] / runs:.2f}" if name in SPENT[s] else "-" for s in streams]
        calls = SPENT[streams[-1]].get(name, [0.0, 0])[1] // runs
        out.add_row(name, *cells, f"{calls:,}")
    return out

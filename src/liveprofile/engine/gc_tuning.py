"""Garbage collection tuned for a pipeline run.

A batch allocates hundreds of thousands of short-lived objects (event fields, dict entries,
encoded rows) that form no reference cycles, while the process holds millions of long-lived
ones (resting profiles, codes, models). With the interpreter's defaults, the collector keeps
walking the long-lived ones; during a run it runs a hundred times less often.

>>> import gc
>>> before = gc.get_threshold()
>>> with fewer_collections():
...     gc.get_threshold()[0] == 100 * before[0]
True
>>> gc.get_threshold() == before
True

Overlapping runs (workers on threads of one process, entering and leaving in any order) raise
the thresholds once and restore them when the last one leaves:

>>> first, second = fewer_collections(), fewer_collections()
>>> _ = first.__enter__(); _ = second.__enter__()
>>> gc.get_threshold()[0] == 100 * before[0]
True
>>> _ = first.__exit__(None, None, None); gc.get_threshold()[0] == 100 * before[0]
True
>>> _ = second.__exit__(None, None, None); gc.get_threshold() == before
True
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
#: runs inside ``fewer_collections`` now, and the thresholds from before the first of them
_inside: list[int] = [0]
_before: list[tuple[int, int, int]] = []


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's thresholds for the duration (restored afterwards).

    Runs may overlap (several workers on threads of one process): the first raises the
    thresholds and the last one out restores them, so they are raised once, never compounded.
    """
    with _lock:
        if _inside[0] == 0:
            before = gc.get_threshold()
            _before[:] = [before]
            gc.set_threshold(before[0] * 100, before[1], before[2] * 10)
        _inside[0] += 1
    try:
        yield
    finally:
        with _lock:
            _inside[0] -= 1
            if _inside[0] == 0:
                gc.set_threshold(*_before.pop())

"""``rowops.heap_due``: the open pending examples due before a time, found by walking only the
due part of a task's deadline heap, are exactly those a scan of every open example finds."""

from __future__ import annotations

import heapq

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from liveprofile.engine.rowops import heap_due


@given(
    deadlines=st.lists(st.integers(0, 40).map(float), max_size=200),
    horizon=st.integers(-1, 42).map(float),
    spare=st.integers(0, 5),
)
def test_heap_due_finds_what_a_scan_finds(
    deadlines: list[float], horizon: float, spare: int
) -> None:
    n = len(deadlines)
    entries = [(d, slot) for slot, d in enumerate(deadlines)]
    heapq.heapify(entries)  # a heap by deadline, as the pool's (ties in any order)
    row = np.zeros(n + spare, np.int64)  # a heap row has room past its length
    row[:n] = [slot for _, slot in entries]
    row[n:] = 0  # slot 0 again past the end: must not be visited
    deadline = np.array(deadlines, np.float64)
    due = heap_due(row, n, deadline, horizon)
    assert sorted(due.tolist()) == [s for s in range(n) if deadline[s] < horizon]

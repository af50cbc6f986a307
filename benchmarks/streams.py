"""The event streams of the benchmark and what every system is fed from them.

- :func:`movielens_stream` sorts the ratings by ``(ts, event_id)`` once and writes them to a
  temporary ``ratings.csv`` (with ``movies.csv`` beside it for the genres), so liveprofile still
  parses and validates the CSV while every system sees the same order.
- :func:`capture` runs liveprofile's :class:`~liveprofile.engine.core.Core` with each learner
  replaced by an :class:`OpRecorder`, which yields the exact model operations (kinds, hashed
  indices, values, labels) the real run hands its learner.
- :func:`delayed_labels` derives the label of every exposure of a delayed task with the same rules
  as liveprofile (every exposure, up to ``open_per_key`` awaiting a conversion per user and key
  and one per user, key and time; conversion strictly after it and within the window, window
  closed once a later event passes the deadline); :func:`check_labels` verifies the
  derivation against the captured operations.
- :func:`refuse_uninformed` stops a run whose stream is too short for a delayed task: when it
  spans no more than two windows, every exposure whose label closes within it was scored before
  any label was learned, so every system predicts its prior and scores AUC 0.5.

Imported by ``compare.py`` and ``exposures.py``; not a script, it takes no arguments.
"""

from __future__ import annotations

import csv
import heapq
import math
import shutil
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from liveprofile.config import PipelineConfig, TaskConfig
from liveprofile.datasets.movielens import movielens_source
from liveprofile.durations import DAY
from liveprofile.engine.core import Core
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import Event
from liveprofile.events.sources import Source
from liveprofile.learn.base import LEARN, PREDICT, OpBatch

F64 = npt.NDArray[np.float64]


def movielens_stream(data_dir: Path, work: Path, limit: int | None) -> Source:
    """A CSV source over MovieLens ratings in event-time order (ties by event id)."""
    original = movielens_source(data_dir / "ratings.csv")
    events = [e for batch in original.batches(0, 50_000) for e in batch.events]
    events.sort(key=lambda e: (e.ts, e.event_id))
    if limit is not None:
        events = events[:limit]
    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_dir / "movies.csv", work / "movies.csv")
    with open(work / "ratings.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["userId", "movieId", "rating", "timestamp"])
        for e in events:
            out.writerow([e.user, e.item_id, e.value, int(e.ts)])
    return movielens_source(work / "ratings.csv")


def read_events(source: Source, size: int) -> list[Event]:
    """Every event of a source, de-duplicated by event id (first one kept, as liveprofile does)."""
    seen: set[str] = set()
    events = []
    for batch in source.batches(0, size):
        for e in batch.events:
            if e.event_id not in seen:
                seen.add(e.event_id)
                events.append(e)
    return events


class OpRecorder:
    """A stand-in learner that keeps every operation batch it is given and predicts 0.5.

    Features never depend on model scores, so the recorded operations are exactly those of the
    real run.
    """

    def __init__(self) -> None:
        self.batches: list[OpBatch] = []

    def run_ops(self, ops: OpBatch) -> F64:
        self.batches.append(ops)
        return np.full(len(ops), 0.5)

    def learn_one(self, x: Mapping[Hashable, float], y: bool) -> None:
        raise NotImplementedError("the recorder only sees operation batches")

    def predict_proba_one(self, x: Mapping[Hashable, float]) -> dict[bool, float]:
        return {False: 0.5, True: 0.5}


def concat_ops(batches: list[OpBatch]) -> OpBatch:
    """One operation batch holding ``batches`` in order."""
    out = OpBatch()
    for ops in batches:
        base = len(out.idx)
        out.kinds.extend(ops.kinds)
        out.starts.extend(base + s for s in ops.starts[1:])
        out.idx.extend(ops.idx)
        out.val.extend(ops.val)
        out.ys.extend(ops.ys)
    return out


def subset_ops(ops: OpBatch, rows: list[int], ys: list[float], kind: int) -> OpBatch:
    """Operations ``rows`` of ``ops`` as operations of ``kind`` with labels ``ys``."""
    out = OpBatch()
    for k, y in zip(rows, ys, strict=True):
        s, e = ops.starts[k], ops.starts[k + 1]
        out.add(kind, list(ops.idx[s:e]), list(ops.val[s:e]), y)
    return out


def capture(config: PipelineConfig, source: Source) -> dict[str, OpBatch]:
    """The model operations of each task when ``source`` is replayed through a fresh core."""
    core = Core(config)
    state = core.new_state()
    recorders = {}
    for name, task in state.tasks.items():
        recorders[name] = task.learner = OpRecorder()
    for batch in source.batches(0, config.run.batch_size):
        core.step(state, batch.events)
    return {name: concat_ops(r.batches) for name, r in recorders.items()}


@dataclass
class DelayedLabels:
    """Exposures of a delayed task, in stream order, and their labels."""

    #: position in the (de-duplicated) event list of each exposure
    events: list[int] = field(default_factory=list)
    open_ts: list[float] = field(default_factory=list)
    deadline: list[float] = field(default_factory=list)
    converted: list[bool] = field(default_factory=list)
    #: exposures in the order their windows closed (the ones still open at the end are absent)
    resolved: list[int] = field(default_factory=list)

    def labels(self) -> F64:
        """1.0 / 0.0 per exposure, NaN for those whose window was still open at the end."""
        out = np.full(len(self.events), np.nan)
        for x in self.resolved:
            out[x] = 1.0 if self.converted[x] else 0.0
        return out


def delayed_labels(events: list[Event], task: TaskConfig) -> DelayedLabels:
    """Exposures and labels of a delayed task, by liveprofile's rules (see the module doc)."""
    label = task.label
    on, conversion = frozenset(task.on), frozenset(label.conversion)
    window = label.window_s
    by_item = label.key == "item"
    per_key = label.open_per_key
    out = DelayedLabels()
    heap: list[tuple[float, float, str, str, int]] = []
    opened: dict[tuple[str, str], list[int]] = {}  # the open exposures per (user, key)
    watermark = float("-inf")
    for pos, e in enumerate(events):
        if e.ts > watermark:
            watermark = e.ts
            while heap and heap[0][0] < watermark:
                *_, user, closed_key, x = heapq.heappop(heap)
                out.resolved.append(x)
                opened[(user, closed_key)].remove(x)
        key = e.item_id if by_item else e.category
        if key is None:
            continue
        open_xs = opened.setdefault((e.user, key), [])
        if e.type in conversion:
            for x in open_xs:
                if not out.converted[x] and out.open_ts[x] < e.ts <= out.deadline[x]:
                    out.converted[x] = True
        if e.type not in on:
            continue
        if any(out.open_ts[x] == e.ts for x in open_xs):
            continue
        if sum(not out.converted[x] for x in open_xs) >= per_key:
            continue
        x = len(out.events)
        out.events.append(pos)
        out.open_ts.append(e.ts)
        out.deadline.append(e.ts + window)
        out.converted.append(False)
        heapq.heappush(heap, (e.ts + window, e.ts, e.user, key, x))
        open_xs.append(x)
    return out


class TooShort(ValueError):
    """The stream cannot measure a delayed task: no labelled exposure is scored after a label
    was learned."""


def span_s(source: Source, size: int) -> float:
    """Seconds of event time from the first event of ``source`` to its last."""
    low, high = math.inf, -math.inf
    for batch in source.batches(0, size):
        events = batch.events
        ts = np.asarray(events.ts if isinstance(events, EventColumns) else [e.ts for e in events])
        if len(ts):
            low, high = min(low, float(ts.min())), max(high, float(ts.max()))
    return max(high - low, 0.0)


def informed(labels: DelayedLabels) -> int:
    """How many labelled exposures were scored after the first label closed (so with a model
    that had learned something): exposures opened after the first deadline."""
    if not labels.resolved:
        return 0
    first = labels.deadline[labels.resolved[0]]  # windows close in deadline order
    return sum(1 for x in labels.resolved if labels.open_ts[x] > first)


def refuse_uninformed(task: TaskConfig, span: float, labels: DelayedLabels | None = None) -> None:
    """Raise :class:`TooShort` if a stream spanning ``span`` seconds (with ``labels``, once
    derived) cannot measure delayed task ``task``: a label is known one window after its
    exposure, so only exposures of a stream longer than two windows can be both labelled
    within it and scored after some label was learned.

    >>> from liveprofile.config import PipelineConfig
    >>> task = next(t for t in PipelineConfig().tasks if t.name == "repurchase")
    >>> refuse_uninformed(task, 30 * 86400.0)
    >>> refuse_uninformed(task, 24.4 * 86400.0)
    Traceback (most recent call last):
    ...
    streams.TooShort: the stream spans 24.4 days; task 'repurchase' learns a label 14.0 days ...
    """
    window = task.label.window_s
    if span > 2 * window and (labels is None or informed(labels) > 0):
        return
    raise TooShort(
        f"the stream spans {span / DAY:.1f} days; task {task.name!r} learns a label "
        f"{window / DAY:.1f} days after its exposure, so every exposure labelled within the "
        "stream is scored before any label is learned and every system would score AUC 0.5 "
        f"(its prior): give a stream of more than {2 * window / DAY:.0f} days"
    )


def check_labels(ops: OpBatch, labels: DelayedLabels) -> None:
    """Fail unless the derived exposures and labels match the captured operations exactly."""
    kinds = np.asarray(ops.kinds)
    ys = np.asarray(ops.ys)
    n_predict = int((kinds == PREDICT).sum())
    learned = ys[kinds == LEARN]
    expected = np.array([1.0 if labels.converted[x] else 0.0 for x in labels.resolved])
    if n_predict != len(labels.events) or not np.array_equal(learned, expected):
        raise RuntimeError(
            f"derived labels disagree with liveprofile: {len(labels.events)} exposures and "
            f"{len(expected)} labels derived, {n_predict} predictions and {len(learned)} "
            "learn operations captured"
        )


def op_examples(ops: OpBatch) -> Iterator[dict[Hashable, float]]:
    """Each operation's features as a River-style dict."""
    for k in range(len(ops)):
        yield ops.example(k)

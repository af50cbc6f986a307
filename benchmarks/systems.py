"""The systems under comparison, each timed on the same stream with prequential metrics.

Every runner returns a :class:`Result`: how many units it processed in how many seconds (only the
work of the system itself is timed; preparing its input is not), and its predictions with the true
labels, from which AUC and log loss are computed the same way for everyone.

Imported by ``compare.py``; not a script, it takes no arguments.
"""

from __future__ import annotations

import math
import tracemalloc
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.metrics import log_loss, roc_auc_score

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import LocalRunner
from liveprofile.events.schema import Event
from liveprofile.events.sources import Source
from liveprofile.learn.base import LEARN, PREDICT, OpArrays, OpBatch, probability
from liveprofile.learn.linear import FTRLProximal
from liveprofile.profile.state import decode_profile
from liveprofile.store.sqlite import SQLiteStore

F64 = npt.NDArray[np.float64]
EPS = 1e-15


@dataclass
class Result:
    """One row of the comparison."""

    system: str
    group: str
    units: int
    seconds: float
    preds: F64 = field(repr=False)
    labels: F64 = field(repr=False)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds > 0 and self.units else math.nan

    def metrics(self) -> tuple[int, float | None, float | None]:
        """Number of scored predictions, AUC and log loss (over predictions with a label)."""
        known = ~np.isnan(self.labels)
        y, p = self.labels[known], np.clip(self.preds[known], EPS, 1.0 - EPS)
        if len(y) == 0 or y.min() == y.max():
            return len(y), None, None
        return len(y), float(roc_auc_score(y, p)), float(log_loss(y, p, labels=[0.0, 1.0]))


def _predict_mask(ops: OpBatch) -> npt.NDArray[np.bool_]:
    kinds: npt.NDArray[np.int64] = np.asarray(ops.kinds, dtype=np.int64)
    return np.bitwise_and(kinds, PREDICT).astype(np.bool_)


# -- (a) liveprofile end to end ----------------------------------------------------------------


class _RecordingFTRL(FTRLProximal):
    """liveprofile's FTRL that also keeps its predictions (one list append per batch)."""

    def __init__(self, like: FTRLProximal) -> None:
        super().__init__(like.alpha, like.beta, like.l1, like.l2, like.bits)
        self.outputs: list[tuple[Any, Any, F64]] = []

    def run_arrays(self, ops: OpArrays) -> F64:
        out: F64 = super().run_arrays(ops)
        self.outputs.append((ops.kinds, ops.ys, out))
        return out

    def predictions(self) -> tuple[F64, F64]:
        """Each prediction, and the label of its operation (meaningful for PREDICT_LEARN)."""
        if not self.outputs:
            return np.empty(0), np.empty(0)
        kinds, ys, out = (np.concatenate(parts) for parts in zip(*self.outputs, strict=True))
        mask = (kinds.astype(np.int64) & PREDICT) != 0
        return out[mask], ys[mask]


def profile_memory(store: SQLiteStore) -> dict[str, float]:
    """Bytes per profile: on disk (whole store), as stored blobs, and decoded in the process."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = dict(store.scan("profile"))  # how the runner keeps profiles between batches
    resting = tracemalloc.get_traced_memory()[0]
    blobs = list(held.values())
    n = max(len(blobs), 1)
    decoded_before = tracemalloc.get_traced_memory()[0]
    profiles = [decode_profile(blob) for blob in blobs]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del profiles, held
    return {
        "profiles": len(blobs),
        "sqlite_bytes_per_profile": store.size_bytes() / n,
        "blob_bytes_per_profile": sum(len(b) for b in blobs) / n,
        "resting_bytes_per_profile": (resting - before) / n,
        "python_bytes_per_profile": (after - decoded_before) / n,
    }


def run_liveprofile(
    config: PipelineConfig,
    source: Source,
    task: str,
    labels: F64 | None,
    work: Path,
    name: str = "liveprofile",
) -> Result:
    """The local runner into a fresh SQLite store; ``labels`` per prediction (None: from ops)."""
    store = SQLiteStore(work / "b.db")
    runner = LocalRunner(config, store, work / "dead.jsonl")
    state = runner.state.tasks[task]
    recorder = None
    if isinstance(state.learner, FTRLProximal):
        recorder = state.learner = _RecordingFTRL(state.learner)
    stats = runner.run(source)
    summary = runner.summary(stats)["tasks"][task]
    preds, op_labels = recorder.predictions() if recorder else (np.empty(0), np.empty(0))
    if labels is None:  # immediate task: each prediction came with its label
        labels = op_labels
    extra = {
        "runner_auc": summary["auc"],
        "runner_logloss": summary["logloss"],
        "runner_n": summary["n"],
        **profile_memory(store),
    }
    runner.close()
    return Result(
        name,
        "end to end",
        stats.events,
        stats.seconds,
        preds,
        labels if len(preds) else np.empty(0),
        extra=extra,
    )


# -- (b) learners alone on liveprofile's hashed features ----------------------------------------


def run_hashed(learner: Any, ops: OpBatch, labels: F64, name: str) -> Result:
    """A liveprofile learner on the whole operation sequence in one compiled call."""
    warm = OpBatch()
    warm.add(PREDICT | LEARN, [1, 2], [1.0, 1.0], 1.0)
    type(learner)(bits=learner.bits).run_ops(warm)  # compile (or load the JIT cache) first
    start = perf_counter()
    out = learner.run_ops(ops)
    seconds = perf_counter() - start
    return Result(name, "learner alone", len(ops), seconds, out[_predict_mask(ops)], labels)


def run_river_learner(model: Any, ops: OpBatch, labels: F64, name: str) -> Result:
    """A River classifier on the same operations, features as ``{index: value}`` dicts."""
    xs = [ops.example(k) for k in range(len(ops))]
    preds = []
    start = perf_counter()
    for kind, x, y in zip(ops.kinds, xs, ops.ys, strict=True):
        if kind & PREDICT:
            preds.append(probability(model.predict_proba_one(x)))
        if kind & LEARN:
            model.learn_one(x, y == 1.0)
    seconds = perf_counter() - start
    return Result(name, "learner alone", len(ops), seconds, np.asarray(preds), labels)


def _vw_line(x: Mapping[Hashable, float], label: str) -> str:
    return label + " |f " + " ".join(f"{i}:{v:.6g}" for i, v in x.items())


def run_vw(ops: OpBatch, labels: F64, bits: int) -> Result:
    """Vowpal Wabbit (logistic loss and link) on the same operations as text examples."""
    import vowpalwabbit

    vw = vowpalwabbit.Workspace(f"--loss_function logistic --link logistic -b {bits} --quiet")
    lines = [
        _vw_line(ops.example(k), ("1" if y == 1.0 else "-1") if kind & LEARN else "")
        for k, (kind, y) in enumerate(zip(ops.kinds, ops.ys, strict=True))
    ]
    preds = []
    start = perf_counter()
    for kind, line in zip(ops.kinds, lines, strict=True):
        ex = vw.parse(line)
        if kind & PREDICT:
            preds.append(vw.predict(ex))
        if kind & LEARN:
            vw.learn(ex)
        vw.finish_example(ex)
    seconds = perf_counter() - start
    vw.finish()
    return Result("Vowpal Wabbit", "learner alone", len(ops), seconds, np.asarray(preds), labels)


def run_sklearn(ops: OpBatch, bits: int) -> Result:
    """``SGDClassifier(loss="log_loss").partial_fit`` per example on a sparse row.

    ``ops`` must be PREDICT_LEARN operations (one per example, label in ``ys``).
    """
    from sklearn.linear_model import SGDClassifier

    rows = []
    for k in range(len(ops)):
        s, e = ops.starts[k], ops.starts[k + 1]
        row = sparse.csr_matrix(
            (ops.val[s:e], ops.idx[s:e], [0, e - s]), shape=(1, 1 << bits), dtype=np.float64
        )
        row.sum_duplicates()
        rows.append(row)
    ys = np.asarray(ops.ys, dtype=np.int64)
    model = SGDClassifier(loss="log_loss")
    classes = np.array([0, 1])
    preds = []
    start = perf_counter()
    for k, row in enumerate(rows):
        preds.append(float(model.predict_proba(row)[0, 1]) if k else 0.5)
        model.partial_fit(row, ys[k : k + 1], classes=classes)
    seconds = perf_counter() - start
    return Result(
        "scikit-learn SGDClassifier.partial_fit",
        "learner alone",
        len(ops),
        seconds,
        np.asarray(preds),
        np.asarray(ops.ys),
    )


# -- (c) River pipeline from the raw events ------------------------------------------------------


ONE_HOT_ITEMS = False


def _one_hot(x: dict[str, Any]) -> dict[str, float]:
    out = {f"user_{x['user']}": 1.0, f"hour_{x['hour']}": 1.0, f"weekday_{x['weekday']}": 1.0}
    if ONE_HOT_ITEMS:
        out[f"item_{x['item']}"] = 1.0
    for topic in x["topics"]:
        out[f"topic_{topic}"] = 1.0
    return out


def event_dict(e: Event) -> dict[str, Any]:
    """The raw event as a River feature dict (no label, no profile)."""
    moment = datetime.fromtimestamp(e.ts, UTC)
    x: dict[str, Any] = {
        "user": e.user,
        "item": e.item_id,
        "category": e.category or "",
        "topics": e.topics(),
        "hour": moment.hour,
        "weekday": moment.weekday(),
    }
    if e.type == "purchase" and e.value is not None:
        x["value"] = e.value
    return x


def river_pipeline(by_category: bool) -> Any:
    """Target means and counts per user and item (and category), scaled, plus one-hot features
    (kept out of the scaler, which would turn them into zeros), into a logistic regression."""
    from river import compose, feature_extraction, linear_model, preprocessing, stats

    groups: list[list[str]] = [["user"], ["item"]]
    if by_category:
        groups += [["category"], ["user", "category"]]
    aggs: list[Any] = []
    for by in groups:
        aggs.append(feature_extraction.TargetAgg(by=by, how=stats.Mean()))
        aggs.append(feature_extraction.Agg(on="hour", by=by, how=stats.Count()))
    if by_category:
        aggs.append(compose.Select("value"))
    numeric = aggs[0]
    for step in aggs[1:]:
        numeric = numeric + step
    scaled = numeric | preprocessing.StandardScaler()
    return (scaled + compose.FuncTransformer(_one_hot)) | linear_model.LogisticRegression()


def run_river_pipeline(
    events: list[Event],
    exposures: list[int],
    labels: F64,
    reveal: Callable[[int], float],
    by_category: bool,
) -> Result:
    """Each example is predicted at its event and learned once ``reveal(k)`` has passed in event
    time (right away when it returns -inf), the way ``river.evaluate.progressive_val_score``
    does with a delay."""
    model = river_pipeline(by_category)
    queue: deque[tuple[float, dict[str, Any], bool]] = deque()
    preds = np.full(len(exposures), np.nan)
    start = perf_counter()
    for k, pos in enumerate(exposures):
        e = events[pos]
        while queue and queue[0][0] < e.ts:
            _, x_old, y_old = queue.popleft()
            model.learn_one(x_old, y_old)
        x = event_dict(e)
        preds[k] = probability(model.predict_proba_one(x))
        if not np.isnan(labels[k]):
            when = reveal(k)
            if when == -math.inf:
                model.learn_one(x, labels[k] == 1.0)
            else:
                queue.append((when, x, labels[k] == 1.0))
    seconds = perf_counter() - start
    return Result("River TargetAgg pipeline", "end to end", len(events), seconds, preds, labels)

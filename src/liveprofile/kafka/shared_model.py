"""One model per task across partitions and workers, parameter-server style.

With ``run.shared_model`` (the default), a Kafka worker or the Flink job does not keep a model
per partition: each task's model lives once in the store, as one row per coordinate holding
the learner's float64s there (:func:`~liveprofile.store.layout.model_namespace`, ``"4d2"`` ->
FTRL's ``z`` and ``n`` at 1234) under a small header
(:class:`~liveprofile.store.layout.ModelHeader`). A :class:`SharedLearner` stands in for the
task's learner in every partition's state:

* **Before** it runs a batch's operations it reads back, in one round trip, the merged values
  of the coordinates those operations touch (the examples' hashed features, and counters such
  as OGD's step count), so the batch predicts and learns with every other worker's committed
  changes. Indices and values travel as packed arrays (:mod:`liveprofile.redis.packed`).
* **After**, it stages the coordinates the batch changed, as (values read, values after), in
  the batch's fenced ``MULTI``/``EXEC`` (:meth:`FencedRedisStore.stage_rows`): a value nobody
  changed since the read gets the batch's value exactly, one another worker changed meanwhile
  gets the batch's difference added. FTRL's ``z`` and ``n``, OGD's weights and step count, and
  the regression learner's weights, squared gradients and target statistics (count, mean, sum
  of squared deviations: rows ``"stats:0"`` to ``"stats:2"``) all merge by adding differences
  (the count exactly; the mean and deviations of two batches run at once to first order). The
  merge commits with the partition's offset, so a batch replayed after a crash never adds its
  changes twice.

Staleness: a batch sees every batch committed before its read; what it misses is at most the
one batch each other worker is running at the same time (whose changes are added when it
commits). With a single worker nothing is missed, and the model equals a single-partition
run's. A learner that cannot merge (River models) stays one model per partition.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping

import numpy as np
import numpy.typing as npt

from liveprofile.engine.state import PipelineState
from liveprofile.errors import StateVersionError
from liveprofile.learn.base import LEARN, OpBatch, Operations
from liveprofile.learn.linear import _HashedLinear
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.base import Store
from liveprofile.store.layout import (
    MODEL_LEARNED,
    ModelHeader,
    decode_model_header,
    encode_model_header,
    model_meta,
    model_namespace,
)

log = logging.getLogger("liveprofile")
F64 = npt.NDArray[np.float64]
_ZERO = bytes(8)
#: sort a batch's indices when there are fewer than the coordinates over this (measured: at
#: 2^20 coordinates sorting 15,000 indices costs 0.1 ms, marking them 0.5 ms; 150,000: 2.9 ms
#: against 2.1 ms; they cost about the same at about 50,000)
_SORT_BELOW = 64


class SharedLearner:
    """A task's learner whose state is the store's shared model (see the module's doc).

    ``inner`` holds the coordinates read so far; each :meth:`run_ops` reads back the ones it
    touches, runs ``inner`` and stages the changes on ``store`` for the batch's commit.
    """

    #: the state commit writes no whole-model blob for this learner (see ``PipelineState``)
    stored_apart = True

    def __init__(self, inner: _HashedLinear, store: FencedRedisStore, task: str) -> None:
        self.inner = inner
        self.store = store
        self.task = task
        self.namespace = model_namespace(task)
        self._marks: npt.NDArray[np.bool_] | None = None

    @property
    def bits(self) -> int:
        return self.inner.bits

    def run_ops(self, ops: Operations) -> F64:
        arrays = ops.arrays()
        idx = np.bitwise_and(arrays.idx, self.inner.mask)
        rows = _records(self.inner.rows())  # a record of float64s per coordinate
        apart = self._apart()
        touched = self._touched(idx)
        indices = touched.astype("<u4").tobytes()
        width = rows.itemsize
        blob = self.store.read_rows(self.namespace, indices, width)
        before = np.frombuffer(blob, dtype="<f8").reshape(touched.size, width // 8)
        rows[touched] = _records(before)
        fields = [f"{name}:{k}" for name, a in apart.items() for k in range(a.size)]
        before_apart = self._read_apart(apart, fields)
        out = self.inner.run_arrays(arrays._replace(idx=idx))
        after = rows[touched].view("<f8").reshape(before.shape)
        changed = np.flatnonzero((after != before).any(axis=1))
        if changed.size:
            self.store.stage_rows(
                self.namespace,
                touched[changed].astype("<u4").tobytes(),
                before[changed].tobytes(),
                after[changed].tobytes(),
                width,
            )
        if apart:
            after_apart = np.concatenate(list(apart.values())).astype("<f8")
            moved = np.flatnonzero(after_apart != before_apart)
            if moved.size:
                self.store.stage_merge(
                    self.namespace,
                    [fields[k] for k in moved.tolist()],
                    before_apart[moved].tobytes(),
                    after_apart[moved].tobytes(),
                )
        learned = int(np.count_nonzero(np.asarray(arrays.kinds) & LEARN))
        self.store.stage_count(self.namespace, MODEL_LEARNED, learned)
        return out

    def _apart(self) -> dict[str, F64]:
        """The inner learner's arrays outside its coordinate rows (OGD's step count, the
        regression learner's target statistics): a row ``"{array}:{k}"`` per value."""
        width = self.inner.mask + 1
        return {name: a for name, a in self.inner.arrays().items() if a.size != width}

    def _touched(self, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The distinct coordinates of ``idx``, in order: sorted when they are few (a small
        batch), else by a mark per coordinate (cheaper than sorting a large batch's hundred
        thousand indices, but it scans every coordinate: half a millisecond at 2^20)."""
        if idx.size * _SORT_BELOW < self.inner.mask + 1:
            return np.unique(idx)
        if self._marks is None:
            self._marks = np.zeros(self.inner.mask + 1, dtype=np.bool_)
        marks = self._marks
        marks[idx] = True
        touched = np.flatnonzero(marks)
        marks[touched] = False
        return touched

    def _read_apart(self, apart: Mapping[str, F64], fields: list[str]) -> F64:
        """Set the arrays outside the rows to the store's merged values (0.0: none yet)."""
        if not apart:
            return np.zeros(0)
        values = self.store.read(self.namespace, fields)
        blob = b"".join(_ZERO if v is None else v for v in values)
        merged = np.frombuffer(blob, dtype="<f8").copy()
        at = 0
        for a in apart.values():
            a[:] = merged[at : at + a.size]
            at += a.size
        return merged

    def _one(self, x: Mapping[Hashable, float], kind: int, y: float) -> float:
        from liveprofile.learn.linear import hash_key

        ops = OpBatch()
        mask = self.inner.mask
        ops.add(kind, [hash_key(k, mask) for k in x], [float(v) for v in x.values()], y)
        return float(self.run_ops(ops)[0])

    def learn_one(self, x: Mapping[Hashable, float], y: bool) -> None:
        self._one(x, LEARN, 1.0 if y else 0.0)

    def predict_proba_one(self, x: Mapping[Hashable, float]) -> dict[bool, float]:
        from liveprofile.learn.base import PREDICT

        p = self._one(x, PREDICT, 0.0)
        return {False: 1.0 - p, True: p}


def _records(rows: F64) -> npt.NDArray[np.void]:
    """A C-contiguous ``(n, k)`` array of float64s as ``n`` records of ``8 * k`` bytes (a view):
    numpy gathers and scatters whole records far faster than rows of a 2-D array."""
    return rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).reshape(-1)


def header_of(learner: _HashedLinear) -> ModelHeader:
    return ModelHeader(kind=learner.kind, params=learner.params(), arrays=list(learner.arrays()))


def share_models(
    store: FencedRedisStore,
    view: Store,
    state: PipelineState,
    models: dict[str, _HashedLinear] | None = None,
) -> None:
    """Replace the mergeable learners of a partition's ``state`` by :class:`SharedLearner`\\ s
    over ``store``'s shared models (``models``: the in-memory copies a worker shares between
    its partitions, filled as needed). Writes each model's header on first use; refuses a
    store whose models were kept per partition, or a header of another learner."""
    models = {} if models is None else models
    for name, task in state.tasks.items():
        learner = task.learner
        if not isinstance(learner, _HashedLinear):
            log.warning(
                "task %s: a %s cannot merge across partitions; it stays one model per partition",
                name,
                type(learner).__name__,
            )
            continue
        if view.get_meta(model_meta(name)) is not None:
            raise StateVersionError(
                f"this store keeps task {name!r}'s model per partition (written before shared "
                "models, or with run.shared_model = false): replay the topic into a new store "
                "(another --prefix), or run with the config the store was built with"
            )
        header = header_of(learner)
        blob = store.get_meta(model_meta(name))
        stored = None if blob is None else decode_model_header(blob)
        if blob is not None and stored is None:
            raise StateVersionError(
                f"the store holds a whole model of task {name!r} (a replay's store): give the "
                "Kafka workers a store of their own (another --prefix)"
            )
        if stored is None:
            store.commit({}, {model_meta(name): encode_model_header(header)})
        elif stored != header:
            raise StateVersionError(
                f"the shared model of task {name!r} is a {stored.kind} with {stored.params}, "
                f"the config asks for a {header.kind} with {header.params}: replay into a new store"
            )
        inner = models.setdefault(name, learner)
        task.learner = SharedLearner(inner, store, name)

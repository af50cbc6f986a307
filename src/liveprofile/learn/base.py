"""The learner protocol (River's) and the batch of model operations the core hands to learners.

Any object with ``learn_one(x, y)`` and ``predict_proba_one(x)`` is a learner, so every River
classifier plugs in. Learners that also implement :class:`BatchLearner` get the fast path: the core
records, per batch of events, the exact sequence of predictions and updates it needs and the
learner runs them in one call, in order, with the same result as calling them one by one.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

#: operation kinds in an :class:`OpBatch`
PREDICT = 1
LEARN = 2
PREDICT_LEARN = PREDICT | LEARN
#: a flag on a learn operation: weigh it as fake-negative weighting does (Ktena et al. 2019), a
#: positive by ``1 + p``, a negative by ``(1 - p)(1 + p)``, ``p`` the learner's own prediction
#: at that moment, not differentiated; learners that can say so (:func:`weighs_fake_negatives`)
FAKE_NEGATIVE = 4


@runtime_checkable
class Learner(Protocol):
    """River's binary classifier protocol."""

    def learn_one(self, x: Mapping[Hashable, float], y: bool) -> object: ...

    def predict_proba_one(self, x: Mapping[Hashable, float]) -> Mapping[bool, float]: ...


class OpArrays(NamedTuple):
    """An operation batch as arrays, the record compiled learners take: operation ``k`` has
    kind ``kinds[k]``, features ``idx``/``val[starts[k]:starts[k + 1]]`` and label ``ys[k]``."""

    kinds: npt.NDArray[np.int8]
    starts: npt.NDArray[np.int64]  # one more than kinds
    idx: npt.NDArray[np.int64]
    val: npt.NDArray[np.float64]
    ys: npt.NDArray[np.float64]


def sparse_example(idx: Any, val: Any, start: int, end: int) -> dict[Hashable, float]:
    """Features ``[start, end)`` as a River-style dict (colliding indices add up)."""
    x: dict[Hashable, float] = {}
    for i, v in zip(idx[start:end], val[start:end], strict=True):
        x[i] = x.get(i, 0.0) + v
    return x


class OpBatch:
    """A sequence of predict/learn operations on hashed sparse examples, in processing order.

    >>> ops = OpBatch()
    >>> ops.add(PREDICT_LEARN, [1, 5], [1.0, 0.5], 1.0)
    0
    >>> ops.add(PREDICT, [5], [2.0])
    1
    >>> arrays = ops.arrays()
    >>> arrays.kinds.tolist(), arrays.starts.tolist(), arrays.idx.tolist()
    ([3, 1], [0, 2, 3], [1, 5, 5])
    """

    __slots__ = ("idx", "kinds", "starts", "val", "ys")

    def __init__(self) -> None:
        self.kinds = array("b")
        self.starts = array("q", [0])
        self.idx = array("q")
        self.val = array("d")
        self.ys = array("d")

    def __len__(self) -> int:
        return len(self.kinds)

    def add(self, kind: int, idx: list[int], val: list[float], y: float = 0.0) -> int:
        """Append one operation; returns its position (where its prediction will be)."""
        self.kinds.append(kind)
        self.idx.extend(idx)
        self.val.extend(val)
        self.starts.append(len(self.idx))
        self.ys.append(y)
        return len(self.kinds) - 1

    def add_packed(self, kind: int, idx: bytes, val: bytes, y: float = 0.0) -> int:
        """Like :meth:`add`, with features packed as ``array('q')`` and ``array('d')`` bytes."""
        self.kinds.append(kind)
        self.idx.frombytes(idx)
        self.val.frombytes(val)
        self.starts.append(len(self.idx))
        self.ys.append(y)
        return len(self.kinds) - 1

    def arrays(self) -> OpArrays:
        return OpArrays(
            np.frombuffer(self.kinds, dtype=np.int8),
            np.frombuffer(self.starts, dtype=np.int64),
            np.frombuffer(self.idx, dtype=np.int64),
            np.frombuffer(self.val, dtype=np.float64),
            np.frombuffer(self.ys, dtype=np.float64),
        )

    def example(self, k: int) -> dict[Hashable, float]:
        """Operation ``k``'s features as a River-style dict (colliding indices add up)."""
        return sparse_example(self.idx, self.val, self.starts[k], self.starts[k + 1])


class ArrayOps:
    """A batch of model operations as arrays (the interface of :class:`OpBatch` learners use),
    as the compiled step and serving make them.

    >>> ops = ArrayOps(np.array([PREDICT], np.int8), np.array([0, 2]), np.array([3, 3]),
    ...                np.array([1.0, 0.5]), np.zeros(1))
    >>> len(ops), ops.example(0)
    (1, {3: 1.5})
    """

    __slots__ = ("idx", "kinds", "starts", "val", "ys")

    def __init__(self, kinds: Any, starts: Any, idx: Any, val: Any, ys: Any) -> None:
        self.kinds, self.starts, self.idx, self.val, self.ys = kinds, starts, idx, val, ys

    def __len__(self) -> int:
        return len(self.kinds)

    def arrays(self) -> OpArrays:
        return OpArrays(self.kinds, self.starts, self.idx, self.val, self.ys)

    def example(self, k: int) -> dict[Hashable, float]:
        s, e = int(self.starts[k]), int(self.starts[k + 1])
        return sparse_example(self.idx[s:e].tolist(), self.val[s:e].tolist(), 0, e - s)


class Operations(Protocol):
    """What learners read from a batch of operations: :class:`OpBatch`, or the arrays of the
    compiled path (``liveprofile.engine.compiled``)."""

    def __len__(self) -> int: ...

    @property
    def kinds(self) -> Any: ...

    @property
    def ys(self) -> Any: ...

    def arrays(self) -> OpArrays: ...

    def example(self, k: int) -> dict[Hashable, float]: ...


@runtime_checkable
class BatchLearner(Learner, Protocol):
    """A learner that can run a whole :class:`OpBatch` in one call."""

    def run_ops(self, ops: Operations) -> npt.NDArray[np.float64]:
        """Run the operations in order; return P(y=1) for each (NaN for learn-only ones)."""
        ...


def weighs_fake_negatives(learner: object) -> bool:
    """Whether ``learner`` honours :data:`FAKE_NEGATIVE` on its operations (a class attribute
    ``fake_negative_weights = True``); other learners learn such operations unweighted.

    >>> from liveprofile.learn import FTRLProximal
    >>> weighs_fake_negatives(FTRLProximal(bits=8)), weighs_fake_negatives(object())
    (True, False)
    """
    return bool(getattr(learner, "fake_negative_weights", False))


def probability(proba: Mapping[bool, float]) -> float:
    """P(y=1) from a River-style ``{False: p0, True: p1}``; 0.5 when the model knows nothing yet.

    >>> probability({}), probability({False: 1.0}), probability({False: 0.3, True: 0.7})
    (0.5, 0.0, 0.7)
    """
    if True in proba:
        return float(proba[True])
    if False in proba:
        return 1.0 - float(proba[False])
    return 0.5


#: whether each learner class is a :class:`BatchLearner` (a protocol's ``isinstance`` checks
#: every member each time: tens of microseconds, as much as a single score's model call)
_BATCH: dict[type, bool] = {}


def run_ops(learner: Learner, ops: Operations) -> npt.NDArray[np.float64]:
    """Run ``ops`` on any learner: one call on the fast path, else one by one (River's way)."""
    kind = type(learner)
    fast = _BATCH.get(kind)
    if fast is None:
        fast = _BATCH[kind] = isinstance(learner, BatchLearner)
    if fast:
        return learner.run_ops(ops)  # type: ignore[attr-defined,no-any-return]
    out = np.full(len(ops), np.nan)
    for k, kind in enumerate(ops.kinds):
        x = ops.example(k)
        if kind & PREDICT:
            out[k] = probability(learner.predict_proba_one(x))
        if kind & LEARN:
            learner.learn_one(x, bool(ops.ys[k]))
    return out

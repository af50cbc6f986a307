"""Regression tasks: a learner with squared loss, and prequential MAE and RMSE.

A delayed task with ``target = "value"`` learns a number, the sum of the ``value`` of its
conversions within the window (e.g. a household's spend in the next 30 days), instead of a label.
Its learner predicts that number (``predict_one``) and learns from it (``learn_one(x, y)`` with a
float ``y``), as River's regressors do, so ``linear_model.LinearRegression`` plugs in; the
built-in :class:`LinearOGD` runs a batch of operations in one compiled call.

>>> model = LinearOGD(lr=1.0, bits=10)
>>> for _ in range(500):
...     model.learn_one({"bias": 1.0, "big": 1.0}, 100.0)
...     model.learn_one({"bias": 1.0, "small": 1.0}, 10.0)
>>> round(model.predict_one({"bias": 1.0, "big": 1.0}))
100
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, cast, runtime_checkable

import msgspec
import numba
import numpy as np
import numpy.typing as npt

from liveprofile.errors import StateVersionError
from liveprofile.learn.base import LEARN, PREDICT, OpArrays, OpBatch, Operations
from liveprofile.learn.drift import Drift, DriftState
from liveprofile.learn.linear import F64, _HashedLinear, hash_key
from liveprofile.learn.metrics import Prequential


class LinRegSettings(NamedTuple):
    """:class:`LinearOGD`'s hyperparameters, as its compiled run takes them."""

    lr: float
    l2: float


@numba.njit(cache=True, nogil=True)
def _linreg_run(wg, stats, hp, ops, out):  # type: ignore[no-untyped-def]
    """Squared loss on the standardised target ``(y - mean) / std`` with per-coordinate
    (AdaGrad) step sizes; ``stats`` holds the count, mean and sum of squared deviations of the
    targets learned so far (Welford), so predictions are ``mean + std * w . x``; ``wg`` holds
    each coordinate's ``w`` and ``g2`` side by side; ``hp``: :class:`LinRegSettings`; ``ops``:
    :class:`~liveprofile.learn.base.OpArrays`."""
    lr, l2 = hp.lr, hp.l2
    kinds, starts, idx, val, ys = ops.kinds, ops.starts, ops.idx, ops.val, ops.ys
    for k in range(kinds.shape[0]):
        s = starts[k]
        e = starts[k + 1]
        wx = 0.0
        for j in range(s, e):
            wx += wg[idx[j], 0] * val[j]
        std = math.sqrt(stats[2] / stats[0]) if stats[0] > 1.0 and stats[2] > 0.0 else 1.0
        kind = kinds[k]
        out[k] = stats[1] + std * wx if kind & 1 else np.nan
        if kind & 2:
            y = ys[k]
            g = wx - (y - stats[1]) / std
            for j in range(s, e):
                i = idx[j]
                gi = g * val[j] + l2 * wg[i, 0]
                wg[i, 1] += gi * gi
                wg[i, 0] -= lr * gi / math.sqrt(wg[i, 1] + 1e-8)
            stats[0] += 1.0
            delta = y - stats[1]
            stats[1] += delta / stats[0]
            stats[2] += delta * (y - stats[1])


class LinearOGD(_HashedLinear):
    """Linear regression by online gradient descent with squared loss on hashed features:
    the prediction is ``mean + std * w . x`` (mean and standard deviation of the targets
    learned so far), ``w`` learned on the standardised target with per-coordinate step sizes
    ``lr / sqrt(sum of squared gradients)`` (AdaGrad), so the scale of the target needs no
    tuning of ``lr``."""

    kind = "linreg"

    def __init__(self, lr: float = 0.5, l2: float = 0.0, bits: int = 20) -> None:
        super().__init__(bits)
        if lr <= 0 or l2 < 0:
            raise ValueError("linreg needs lr > 0 and l2 >= 0")
        self.lr, self.l2 = float(lr), float(l2)
        #: each coordinate's weight and sum of squared gradients side by side (one cache line)
        self.wg = np.zeros((1 << bits, 2))
        self.stats = np.zeros(3)  # targets learned, their mean, sum of squared deviations

    @property
    def w(self) -> F64:
        return self.wg[:, 0]

    @property
    def g2(self) -> F64:
        return self.wg[:, 1]

    def _value(self, x: Mapping[Hashable, float], kind: int, y: float) -> float:
        ops = OpBatch()
        ops.add(kind, [hash_key(k, self.mask) for k in x], [float(v) for v in x.values()], y)
        return float(self.run_ops(ops)[0])

    def learn_one(self, x: Mapping[Hashable, float], y: float) -> None:
        self._value(x, LEARN, float(y))

    def predict_one(self, x: Mapping[Hashable, float]) -> float:
        return self._value(x, PREDICT, 0.0)

    def predict_proba_one(self, x: Mapping[Hashable, float]) -> dict[bool, float]:
        raise TypeError("a regression learner predicts a number: use predict_one")

    def run_arrays(self, ops: OpArrays) -> F64:
        out = np.empty(ops.kinds.shape[0])
        self._note(ops)
        _linreg_run(self.wg, self.stats, LinRegSettings(self.lr, self.l2), ops, out)
        return out

    def params(self) -> dict[str, float | int]:
        return {"lr": self.lr, "l2": self.l2, "bits": self.bits}

    def arrays(self) -> dict[str, F64]:
        return {"w": self.w, "g2": self.g2, "stats": self.stats}

    def rows(self) -> npt.NDArray[np.float64]:
        return self.wg


@runtime_checkable
class Regressor(Protocol):
    """River's regressor protocol."""

    def learn_one(self, x: Mapping[Hashable, float], y: float) -> object: ...

    def predict_one(self, x: Mapping[Hashable, float]) -> float: ...


def run_regression_ops(learner: Any, ops: Operations) -> F64:
    """Run ``ops`` on a regressor: one call for :class:`LinearOGD` (also behind a shared model,
    :class:`~liveprofile.kafka.shared_model.SharedLearner`), else one by one."""
    if isinstance(getattr(learner, "inner", learner), LinearOGD):
        out: F64 = learner.run_ops(ops)
        return out
    if not isinstance(learner, Regressor):
        raise TypeError(f"{type(learner).__name__} is no regressor (learn_one, predict_one)")
    out = np.full(len(ops), np.nan)
    for k, kind in enumerate(ops.kinds):
        x = ops.example(k)
        if kind & PREDICT:
            out[k] = float(learner.predict_one(x))
        if kind & LEARN:
            learner.learn_one(x, float(ops.ys[k]))
    return out


# -- prequential metrics ---------------------------------------------------------------------

#: version of the stored regression metrics: 1 without drift state, 2 with it (1 is still read)
REGRESSION_METRICS_VERSION = 2
#: the largest relative error the drift detector is fed: one outlier (a household's one big
#: basket) moves its statistic by at most this, a lasting rise of the errors raises an alarm
RELATIVE_ERROR_CAP = 3.0


#: examples whose errors set the scale before the drift detector is fed (the first errors of a
#: fresh model are neither large nor typical: mostly zero targets predicted as zero)
SCALE_EXAMPLES = 1000


def relative_error(err: float, mae: float) -> float:
    """The loss a regression task's drift detector watches: the absolute error ``err`` over the
    task's MAE before this example (``mae``, once :data:`SCALE_EXAMPLES` set it), capped at
    :data:`RELATIVE_ERROR_CAP`. It is 1.0 on average while the errors keep their size, whatever
    the target's unit, so the detector's settings of the classification tasks (chosen in nats
    of log loss, :mod:`liveprofile.learn.drift`) apply as they are.

    >>> relative_error(20.0, 10.0), relative_error(500.0, 10.0)
    (2.0, 3.0)
    >>> relative_error(0.0, 0.0), relative_error(2.0, 0.0)
    (0.0, 3.0)
    """
    if mae <= 0.0:
        return 0.0 if err == 0.0 else RELATIVE_ERROR_CAP
    return min(err / mae, RELATIVE_ERROR_CAP)


class _Sums(msgspec.Struct, array_like=True):
    n: int = 0
    abs_err: float = 0.0
    sq_err: float = 0.0
    y_sum: float = 0.0
    p_sum: float = 0.0

    def add(self, p: float, y: float) -> None:
        self.n += 1
        self.abs_err += abs(p - y)
        self.sq_err += (p - y) ** 2
        self.y_sum += y
        self.p_sum += p

    def summary(self) -> dict[str, Any]:
        n = self.n
        return {
            "n": n,
            "mae": self.abs_err / n if n else None,
            "rmse": math.sqrt(self.sq_err / n) if n else None,
            "mean_target": self.y_sum / n if n else None,
            "mean_prediction": self.p_sum / n if n else None,
        }


class _StoredRegression(msgspec.Struct, tag="regression"):
    version: int
    window: float
    all: _Sums
    windows: dict[int, _Sums]
    drift: DriftState | None = None


class RegressionMetrics:
    """Prequential MAE and RMSE of a regression task, overall and per event-time window, with
    the interface of :class:`~liveprofile.learn.metrics.Prequential` (``auc`` and ``logloss``
    read None). Drift is watched on the absolute error relative to the MAE so far
    (:func:`relative_error`), by the classification tasks' detector.

    >>> m = RegressionMetrics(window=10.0)
    >>> for p, y, t in [(10.0, 12.0, 1.0), (5.0, 1.0, 2.0), (0.0, 0.0, 11.0)]:
    ...     m.record(p, y, t)
    >>> s = m.summary()
    >>> s["n"], s["mae"], round(s["rmse"], 4), [w["n"] for w in m.windows()]
    (3, 2.0, 2.582, [2, 1])
    >>> RegressionMetrics.from_bytes(m.to_bytes()).summary() == s
    True
    """

    def __init__(self, window: float = 7 * 86400.0) -> None:
        self.window = window
        self.all = _Sums()
        self._windows: dict[int, _Sums] = {}
        self.drift = Drift()

    @property
    def n(self) -> int:
        return self.all.n

    def record(self, p: float, y: float, ts: float) -> None:
        """Count one prediction ``p`` made at event time ``ts`` of the target ``y``."""
        total = self.all
        mae = total.abs_err / total.n if total.n else 0.0
        total.add(p, y)
        if total.n > SCALE_EXAMPLES:
            self.drift.update(relative_error(abs(p - y), mae), ts, total.n)
        key = math.floor(ts / self.window)
        win = self._windows.get(key)
        if win is None:
            win = self._windows[key] = _Sums()
        win.add(p, y)

    def record_many(self, p: npt.NDArray[np.float64], y: Any, ts: npt.NDArray[np.float64]) -> None:
        ys = np.asarray(y, np.float64).tolist()
        for pk, yk, tk in zip(p.tolist(), ys, ts.tolist(), strict=True):
            self.record(pk, yk, tk)

    def summary(self) -> dict[str, Any]:
        return {
            **self.all.summary(),
            "auc": None,
            "logloss": None,
            "positives": None,
            "positive_rate": None,
            "drift": {**self.drift.summary(), "loss": "absolute error / MAE so far"},
        }

    def windows(self) -> list[dict[str, Any]]:
        """Metrics per event-time window, oldest first."""
        out = []
        for key in sorted(self._windows):
            row = self._windows[key].summary()
            out.append(
                {"start": key * self.window, "end": (key + 1) * self.window, **row, "auc": None}
            )
        return out

    def calibration(self, buckets: int = 10) -> list[dict[str, float]]:
        return []

    def add(self, other: RegressionMetrics) -> None:
        """Add ``other``'s predictions (another partition of the same task)."""
        if other.window != self.window:
            raise ValueError(f"cannot add metrics of {other.window} s windows to {self.window} s")
        self.drift.absorb(other.drift)
        for key, sums in [(None, other.all), *other._windows.items()]:
            mine = self.all if key is None else self._windows.setdefault(key, _Sums())
            mine.n += sums.n
            mine.abs_err += sums.abs_err
            mine.sq_err += sums.sq_err
            mine.y_sum += sums.y_sum
            mine.p_sum += sums.p_sum

    def to_bytes(self) -> bytes:
        state = _StoredRegression(
            REGRESSION_METRICS_VERSION,
            self.window,
            self.all,
            dict(self._windows),
            self.drift.to_state(),
        )
        return msgspec.msgpack.encode(state)

    @classmethod
    def accepts(cls, blob: bytes) -> bool:
        """Whether ``blob`` holds regression metrics (rather than classification ones)."""
        try:
            msgspec.msgpack.decode(blob, type=_StoredRegression)
        except msgspec.ValidationError:
            return False
        return True

    @classmethod
    def from_bytes(cls, blob: bytes) -> RegressionMetrics:
        state = msgspec.msgpack.decode(blob, type=_StoredRegression)
        if state.version > REGRESSION_METRICS_VERSION:
            raise StateVersionError(
                f"stored regression metrics have version {state.version}, this version reads "
                f"up to {REGRESSION_METRICS_VERSION}: upgrade liveprofile"
            )
        m = cls(state.window)
        m.all = state.all
        m._windows = dict(state.windows)
        if state.drift is not None:
            m.drift = Drift.from_state(state.drift)
        return m


def metrics_from_bytes(blob: bytes) -> Prequential | RegressionMetrics:
    """The stored metrics of a task, classification or regression."""
    if RegressionMetrics.accepts(blob):
        return RegressionMetrics.from_bytes(blob)
    return Prequential.from_bytes(blob)


def merged_metrics(blobs: Iterable[bytes]) -> Prequential | RegressionMetrics | None:
    """One task's stored metrics of several partitions, added up (None: no blob).

    >>> a, b = Prequential(), Prequential()
    >>> a.record(0.8, True, 0.0); b.record(0.3, False, 0.0); b.record(0.6, True, 0.0)
    >>> merged_metrics([a.to_bytes(), b.to_bytes()]).summary()["n"]
    3
    """
    total: Prequential | RegressionMetrics | None = None
    for blob in blobs:
        one = metrics_from_bytes(blob)
        if total is None:
            total = one
        elif isinstance(total, RegressionMetrics) != isinstance(one, RegressionMetrics):
            raise ValueError("cannot add classification and regression metrics of one task")
        elif isinstance(total, RegressionMetrics):
            total.add(cast(RegressionMetrics, one))
        else:
            total.add(cast(Prequential, one))
    return total

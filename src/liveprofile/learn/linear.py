"""Linear learners on hashed sparse features, compiled with numba.

- :class:`LogisticOGD`: logistic regression by online gradient descent, the textbook update
  ``theta <- theta - eta * grad J(theta; x_t, y_t)`` with optional L2 and a decaying step size.
- :class:`FTRLProximal`: per-coordinate learning rates with L1 and L2 (McMahan et al., "Ad click
  prediction: a view from the trenches", KDD 2013, Algorithm 1).

Both speak River's protocol (features are a dict; integer keys are used as hashed indices, other
keys are hashed) and run a whole :class:`~liveprofile.learn.base.OpBatch` in one compiled call.

>>> model = FTRLProximal(alpha=0.5, bits=10)
>>> for _ in range(50):
...     model.learn_one({"bias": 1.0, "colour=red": 1.0}, True)
...     model.learn_one({"bias": 1.0, "colour=blue": 1.0}, False)
>>> model.predict_proba_one({"bias": 1.0, "colour=red": 1.0})[True] > 0.8
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar, NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from liveprofile.learn.base import LEARN, PREDICT, OpArrays, OpBatch, Operations

F64 = npt.NDArray[np.float64]
#: flat indices into each of a learner's arrays (see :meth:`_HashedLinear.take_changes`)
Changes = dict[str, npt.NDArray[np.int64]]


class FTRLSettings(NamedTuple):
    """FTRL-Proximal's hyperparameters, as its compiled functions take them."""

    alpha: float
    beta: float
    l1: float
    l2: float


class OGDSettings(NamedTuple):
    """Online gradient descent's hyperparameters: step ``lr / (1 + t) ** power``, L2."""

    lr: float
    power: float
    l2: float


@numba.njit(cache=True, nogil=True)
def _sigmoid(wx: float) -> float:
    if wx > 35.0:
        wx = 35.0
    elif wx < -35.0:
        wx = -35.0
    return 1.0 / (1.0 + math.exp(-wx))


@numba.njit(cache=True, nogil=True)
def _weight(kind: int, p: float, y: float) -> float:
    """The weight of a learn operation: 1, or with ``FAKE_NEGATIVE`` (4) the fake-negative
    weight of label ``y`` at prediction ``p`` (see ``liveprofile.learn.base.FAKE_NEGATIVE``)."""
    if not kind & 4:
        return 1.0
    return 1.0 + p if y > 0.5 else (1.0 - p) * (1.0 + p)


@numba.njit(cache=True, nogil=True)
def _merge(idx, val, s, e, ui, uv, slots):  # type: ignore[no-untyped-def]
    """Copy example ``[s, e)`` into ``ui``/``uv`` with colliding indices added up, so an
    example is the sparse vector x of Algorithm 1 whatever the hashing did; returns its size.

    Indices keep the order of their first occurrence and values are added in the example's
    order. ``slots`` (zeros, a power of two longer than the example) is an open-addressed
    table of positions in ``ui`` plus one, keyed by the index's low bits (indices are hashes
    already); it is left zeroed."""
    mask = slots.shape[0] - 1
    m = 0
    for j in range(s, e):
        i = idx[j]
        h = i & mask
        while True:
            q = slots[h] - 1
            if q < 0:
                slots[h] = m + 1
                ui[m] = i
                uv[m] = val[j]
                m += 1
                break
            if ui[q] == i:
                uv[q] += val[j]
                break
            h = (h + 1) & mask
    for q in range(m):
        h = ui[q] & mask
        while slots[h] != 0:
            slots[h] = 0
            h = (h + 1) & mask
    return m


@numba.njit(cache=True, nogil=True)
def _room(e_s, ui, uv, w, slots):  # type: ignore[no-untyped-def]
    """Scratch arrays for an example of ``e_s`` features: the given ones when they are long
    enough, else new ones twice that long (``slots``: a power of two above twice that)."""
    if e_s <= ui.shape[0]:
        return ui, uv, w, slots
    size = 2 * e_s
    table = 1
    while table < 2 * size:
        table *= 2
    return (
        np.empty(size, dtype=np.int64),
        np.empty(size),
        np.empty(size),
        np.zeros(table, dtype=np.int64),
    )


@numba.njit(cache=True, nogil=True)
def _ftrl_weight(zi: float, ni: float, alpha: float, beta: float, l1: float, l2: float) -> float:
    """A coordinate's FTRL-Proximal weight from its ``z`` and ``n`` (McMahan et al. 2013)."""
    if abs(zi) <= l1:
        return 0.0
    sign = 1.0 if zi > 0 else -1.0
    return -(zi - sign * l1) / ((beta + math.sqrt(ni)) / alpha + l2)


@numba.njit(cache=True, nogil=True)
def _ftrl_weights(zn, hp, idx, out):  # type: ignore[no-untyped-def]
    """The weight of each of the coordinates ``idx``, into ``out`` (``hp``: FTRLSettings)."""
    for j in range(idx.shape[0]):
        i = idx[j]
        out[j] = _ftrl_weight(zn[i, 0], zn[i, 1], hp.alpha, hp.beta, hp.l1, hp.l2)


@numba.njit(cache=True, nogil=True)
def _ftrl_run(zn, hp, ops, out):  # type: ignore[no-untyped-def]
    """Algorithm 1 over a batch of operations (:class:`~liveprofile.learn.base.OpArrays`);
    ``zn`` holds each coordinate's ``z`` and ``n`` side by side, so the two share a cache line;
    ``hp``: :class:`FTRLSettings`."""
    alpha, beta, l1, l2 = hp.alpha, hp.beta, hp.l1, hp.l2
    kinds, starts, idx, val, ys = ops.kinds, ops.starts, ops.idx, ops.val, ops.ys
    w = np.empty(64)
    ui = np.empty(64, dtype=np.int64)
    uv = np.empty(64)
    slots = np.zeros(256, dtype=np.int64)
    for k in range(kinds.shape[0]):
        s = starts[k]
        e = starts[k + 1]
        ui, uv, w, slots = _room(e - s, ui, uv, w, slots)
        m = _merge(idx, val, s, e, ui, uv, slots)
        wx = 0.0
        for j in range(m):
            i = ui[j]
            wi = _ftrl_weight(zn[i, 0], zn[i, 1], alpha, beta, l1, l2)
            w[j] = wi
            wx += wi * uv[j]
        p = _sigmoid(wx)
        kind = kinds[k]
        out[k] = p if kind & 1 else np.nan
        if kind & 2:
            g = (p - ys[k]) * _weight(kind, p, ys[k])
            for j in range(m):
                i = ui[j]
                gi = g * uv[j]
                ni = zn[i, 1]
                sigma = (math.sqrt(ni + gi * gi) - math.sqrt(ni)) / alpha
                zn[i, 0] += gi - sigma * w[j]
                zn[i, 1] = ni + gi * gi


@numba.njit(cache=True, nogil=True)
def _ogd_run(w, t0, hp, ops, out):  # type: ignore[no-untyped-def]
    """Online gradient descent over a batch of operations from step ``t0`` (``hp``:
    :class:`OGDSettings`); returns the step reached."""
    lr, power, l2 = hp.lr, hp.power, hp.l2
    kinds, starts, idx, val, ys = ops.kinds, ops.starts, ops.idx, ops.val, ops.ys
    t = t0
    for k in range(kinds.shape[0]):
        s = starts[k]
        e = starts[k + 1]
        wx = 0.0
        for j in range(s, e):
            wx += w[idx[j]] * val[j]
        p = _sigmoid(wx)
        kind = kinds[k]
        out[k] = p if kind & 1 else np.nan
        if kind & 2:
            eta = lr / (1.0 + t) ** power
            g = (p - ys[k]) * _weight(kind, p, ys[k])
            for j in range(s, e):
                i = idx[j]
                w[i] -= eta * (g * val[j] + l2 * w[i])
            t += 1
    return t


@numba.njit(cache=True, nogil=True)
def _mark(ops, marks):  # type: ignore[no-untyped-def]
    """Set ``marks`` at the features of every learn operation (the coordinates it may move)."""
    kinds, starts, idx = ops.kinds, ops.starts, ops.idx
    for k in range(kinds.shape[0]):
        if kinds[k] & 2:
            for j in range(starts[k], starts[k + 1]):
                marks[idx[j]] = True


def _drain(marks: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """The indices set in ``marks``, which are cleared."""
    marked = np.flatnonzero(marks)
    marks[marked] = False
    return marked


def hash_key(key: Hashable, mask: int) -> int:
    """The index of a feature key: integers as they are, anything else by CRC32 of its text."""
    if isinstance(key, int):
        return key & mask
    return zlib.crc32(str(key).encode()) & mask


class _HashedLinear:
    """Shared plumbing: the hashed index space, the dict path, and explicit state."""

    kind: ClassVar[str]
    bits: int
    #: honours ``FAKE_NEGATIVE`` learn operations (``label.feedback = "fnw"``)
    fake_negative_weights: ClassVar[bool] = True

    def __init__(self, bits: int) -> None:
        if not 4 <= bits <= 28:
            raise ValueError(f"bits must be within 4..28, got {bits}")
        self.bits = bits
        self.mask = (1 << bits) - 1
        #: feature coordinates learned since the last :meth:`take_changes` (None: not tracked)
        self._marks: npt.NDArray[np.bool_] | None = None

    def track_changes(self) -> bool:
        """Record from now on which coordinates learning moves, for :meth:`take_changes`;
        False: this learner cannot say."""
        if self._marks is None:
            self._marks = np.zeros(1 << self.bits, dtype=np.bool_)
        return True

    def _note(self, ops: OpArrays) -> None:
        """Mark the features of the learn operations about to run (when tracked)."""
        if self._marks is not None:
            _mark(ops, self._marks)

    def take_changes(self) -> Changes | None:
        """Per array, the flat indices of the coordinates that may have changed since the
        last call (or since :meth:`track_changes`): the learned features of arrays indexed by
        feature, every index of the small ones. None: not tracked.

        >>> model = FTRLProximal(bits=8)
        >>> model.track_changes()
        True
        >>> model.learn_one({3: 1.0, 7: 2.0}, True)
        >>> model.predict_proba_one({9: 1.0})[True]
        0.5
        >>> {name: idx.tolist() for name, idx in model.take_changes().items()}
        {'z': [3, 7], 'n': [3, 7]}
        >>> model.take_changes()["z"].tolist()
        []
        """
        if self._marks is None:
            return None
        return self._changed_of(self.arrays(), _drain(self._marks))

    def _changed_of(self, arrays: Mapping[str, F64], learned: npt.NDArray[np.int64]) -> Changes:
        """Per array of ``arrays``: ``learned`` for those indexed by feature, every index of
        the others."""
        width = 1 << self.bits
        return {n: learned if a.size == width else np.arange(a.size) for n, a in arrays.items()}

    def _one(self, x: Mapping[Hashable, float], kind: int, y: float) -> float:
        ops = OpBatch()
        ops.add(kind, [hash_key(k, self.mask) for k in x], [float(v) for v in x.values()], y)
        return float(self.run_ops(ops)[0])

    def learn_one(self, x: Mapping[Hashable, float], y: bool) -> None:
        self._one(x, LEARN, 1.0 if y else 0.0)

    def predict_proba_one(self, x: Mapping[Hashable, float]) -> dict[bool, float]:
        p = self._one(x, PREDICT, 0.0)
        return {False: 1.0 - p, True: p}

    def run_ops(self, ops: Operations) -> F64:
        arrays = ops.arrays()
        return self.run_arrays(arrays._replace(idx=np.bitwise_and(arrays.idx, self.mask)))

    def run_arrays(self, ops: OpArrays) -> F64:
        """Run ``ops`` (indices within the model's ``2**bits``) in order; P(y=1) for each
        (NaN for learn-only ones)."""
        raise NotImplementedError

    def params(self) -> dict[str, float | int]:
        raise NotImplementedError

    def arrays(self) -> dict[str, F64]:
        raise NotImplementedError

    def rows(self) -> npt.NDArray[np.float64]:
        """The arrays indexed by feature (those of :meth:`arrays` as long as the index space, in
        its order) as one C-contiguous ``(2**bits, k)`` view: row ``i`` is coordinate ``i``'s
        values, as a shared model stores them (:mod:`liveprofile.kafka.shared_model`)."""
        raise NotImplementedError

    def set_arrays(self, arrays: Mapping[str, F64]) -> None:
        for name, current in self.arrays().items():
            current[:] = arrays[name]
        if self._marks is not None:
            self._marks[:] = True  # every coordinate may have changed

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class FTRLProximal(_HashedLinear):
    """FTRL-Proximal logistic regression with per-coordinate learning rates, L1 and L2."""

    kind = "ftrl"

    def __init__(
        self,
        alpha: float = 0.2,
        beta: float = 1.0,
        l1: float = 0.0,
        l2: float = 1.0,
        bits: int = 20,
    ) -> None:
        super().__init__(bits)
        if alpha <= 0 or beta < 0 or l1 < 0 or l2 < 0:
            raise ValueError("FTRL needs alpha > 0 and non-negative beta, l1, l2")
        self.alpha, self.beta, self.l1, self.l2 = float(alpha), float(beta), float(l1), float(l2)
        #: each coordinate's ``z`` and ``n`` side by side (one cache line for both)
        self.zn = np.zeros((1 << bits, 2))

    @property
    def z(self) -> F64:
        return self.zn[:, 0]

    @property
    def n(self) -> F64:
        return self.zn[:, 1]

    @property
    def settings(self) -> FTRLSettings:
        return FTRLSettings(self.alpha, self.beta, self.l1, self.l2)

    def run_arrays(self, ops: OpArrays) -> F64:
        out = np.empty(ops.kinds.shape[0])
        self._note(ops)
        _ftrl_run(self.zn, self.settings, ops, out)
        return out

    def weights(self, idx: Any) -> F64:
        """The weights of the features ``idx`` (hashed indices, masked here), as the model
        uses them."""
        j = np.bitwise_and(np.asarray(idx, dtype=np.int64), self.mask)
        out = np.empty(j.shape[0])
        _ftrl_weights(self.zn, self.settings, j, out)
        return out

    def params(self) -> dict[str, float | int]:
        return {
            "alpha": self.alpha,
            "beta": self.beta,
            "l1": self.l1,
            "l2": self.l2,
            "bits": self.bits,
        }

    def arrays(self) -> dict[str, F64]:
        return {"z": self.z, "n": self.n}

    def rows(self) -> npt.NDArray[np.float64]:
        return self.zn


class LogisticOGD(_HashedLinear):
    """Logistic regression by online gradient descent: ``w -= eta_t * ((p - y) x + l2 w)``.

    The step size is ``eta_t = lr / (1 + t) ** power`` (``power=0`` keeps it constant).
    """

    kind = "ogd"

    def __init__(
        self, lr: float = 0.01, power: float = 0.0, l2: float = 0.0, bits: int = 20
    ) -> None:
        super().__init__(bits)
        if lr <= 0 or power < 0 or l2 < 0:
            raise ValueError("OGD needs lr > 0 and non-negative power and l2")
        self.lr, self.power, self.l2 = float(lr), float(power), float(l2)
        self.w = np.zeros(1 << bits)
        self.t = np.zeros(1)

    def run_arrays(self, ops: OpArrays) -> F64:
        out = np.empty(ops.kinds.shape[0])
        self._note(ops)
        hp = OGDSettings(self.lr, self.power, self.l2)
        self.t[0] = _ogd_run(self.w, self.t[0], hp, ops, out)
        return out

    def params(self) -> dict[str, float | int]:
        return {"lr": self.lr, "power": self.power, "l2": self.l2, "bits": self.bits}

    def arrays(self) -> dict[str, F64]:
        return {"w": self.w, "t": self.t}

    def rows(self) -> npt.NDArray[np.float64]:
        return self.w.reshape(-1, 1)

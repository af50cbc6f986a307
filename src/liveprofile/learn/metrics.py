"""Prequential evaluation (predict, record, then learn): AUC, log loss and calibration, overall
and per event-time window, in bounded memory.

Predictions are counted in fixed-width score bins per label, so AUC is exact up to ties inside a
bin (1/2048 wide overall), the state is a few arrays that merge and checkpoint cheaply, and a
stream of any length costs the same memory.

>>> m = Prequential(window=10.0)
>>> for p, y, t in [(0.9, True, 1.0), (0.2, False, 2.0), (0.7, True, 11.0), (0.4, False, 12.0)]:
...     m.record(p, y, t)
>>> s = m.summary()
>>> s["n"], s["auc"], round(s["logloss"], 4)
(4, 1.0, 0.299)
>>> [w["n"] for w in m.windows()]
[2, 2]
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numba
import numpy as np
import numpy.typing as npt

BINS = 2048
WINDOW_BINS = 128
_EPS = 1e-15


class _Counts(msgspec.Struct, array_like=True):
    pos: list[int]
    neg: list[int]
    logloss: float = 0.0
    p_sum: float = 0.0


def _auc(pos: npt.NDArray[np.int64], neg: npt.NDArray[np.int64]) -> float | None:
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    neg_below = np.cumsum(neg) - neg  # negatives in strictly lower bins
    wins = float((pos * neg_below).sum()) + 0.5 * float((pos * neg).sum())
    return wins / (n_pos * n_neg)


@numba.njit(cache=True, nogil=True)
def _record_all(p, y, where, pos, neg, sums, w_pos, w_neg, w_sums):  # type: ignore[no-untyped-def]
    for k in range(p.shape[0]):
        q = min(max(p[k], _EPS), 1.0 - _EPS)
        loss = -math.log(q) if y[k] else -math.log(1.0 - q)
        b = min(int(q * BINS), BINS - 1)
        w = where[k]
        if y[k]:
            pos[b] += 1
            w_pos[w, b * WINDOW_BINS // BINS] += 1
        else:
            neg[b] += 1
            w_neg[w, b * WINDOW_BINS // BINS] += 1
        sums[0] += loss
        sums[1] += q
        w_sums[w, 0] += loss
        w_sums[w, 1] += q


class Prequential:
    """Running prequential metrics of one task."""

    def __init__(self, window: float = 7 * 86400.0) -> None:
        self.window = window
        self.pos = np.zeros(BINS, dtype=np.int64)
        self.neg = np.zeros(BINS, dtype=np.int64)
        self.logloss = 0.0
        self.p_sum = 0.0
        self._windows: dict[int, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], list[float]]]
        self._windows = {}

    @property
    def n(self) -> int:
        return int(self.pos.sum() + self.neg.sum())

    def record(self, p: float, y: bool, ts: float) -> None:
        """Count one prediction ``p`` (of y=1) made at event time ``ts`` with true label ``y``."""
        p = min(max(p, _EPS), 1.0 - _EPS)
        loss = -math.log(p) if y else -math.log(1.0 - p)
        b = min(int(p * BINS), BINS - 1)
        (self.pos if y else self.neg)[b] += 1
        self.logloss += loss
        self.p_sum += p
        key = math.floor(ts / self.window)
        win = self._windows.get(key)
        if win is None:
            win = self._windows[key] = (
                np.zeros(WINDOW_BINS, dtype=np.int64),
                np.zeros(WINDOW_BINS, dtype=np.int64),
                [0.0, 0.0],
            )
        (win[0] if y else win[1])[b * WINDOW_BINS // BINS] += 1
        win[2][0] += loss
        win[2][1] += p

    def record_many(
        self, p: npt.NDArray[np.float64], y: npt.NDArray[np.bool_], ts: npt.NDArray[np.float64]
    ) -> None:
        """:meth:`record` for each ``(p[k], y[k], ts[k])`` in order, in one compiled pass (the
        sums add up in the same order, so the result is the same to the last bit)."""
        if not len(p):
            return
        keys = np.floor(ts / self.window).astype(np.int64)
        order = list(dict.fromkeys(keys.tolist()))
        for key in order:
            if key not in self._windows:
                self._windows[key] = (
                    np.zeros(WINDOW_BINS, dtype=np.int64),
                    np.zeros(WINDOW_BINS, dtype=np.int64),
                    [0.0, 0.0],
                )
        slot = {key: j for j, key in enumerate(order)}
        wins = [self._windows[key] for key in order]
        w_pos = np.stack([w[0] for w in wins])
        w_neg = np.stack([w[1] for w in wins])
        w_sums = np.array([w[2] for w in wins], dtype=np.float64)
        where = np.array([slot[k] for k in keys.tolist()], dtype=np.int64)
        sums = np.array([self.logloss, self.p_sum])
        _record_all(p, y, where, self.pos, self.neg, sums, w_pos, w_neg, w_sums)
        self.logloss, self.p_sum = float(sums[0]), float(sums[1])
        for j, (pos, neg, extra) in enumerate(wins):
            pos[:] = w_pos[j]
            neg[:] = w_neg[j]
            extra[0], extra[1] = float(w_sums[j, 0]), float(w_sums[j, 1])

    def summary(self) -> dict[str, Any]:
        n = self.n
        positives = int(self.pos.sum())
        return {
            "n": n,
            "positives": positives,
            "auc": _auc(self.pos, self.neg),
            "logloss": self.logloss / n if n else None,
            "mean_prediction": self.p_sum / n if n else None,
            "positive_rate": positives / n if n else None,
        }

    def windows(self) -> list[dict[str, Any]]:
        """Metrics per event-time window, oldest first."""
        out = []
        for key in sorted(self._windows):
            pos, neg, (loss, p_sum) = self._windows[key]
            n = int(pos.sum() + neg.sum())
            out.append(
                {
                    "start": key * self.window,
                    "end": (key + 1) * self.window,
                    "n": n,
                    "auc": _auc(pos, neg),
                    "logloss": loss / n,
                    "mean_prediction": p_sum / n,
                    "positive_rate": int(pos.sum()) / n,
                }
            )
        return out

    def calibration(self, buckets: int = 10) -> list[dict[str, float]]:
        """Observed positive rate per predicted-probability bucket (from the score bins)."""
        step = BINS // buckets
        out = []
        for b in range(buckets):
            pos = int(self.pos[b * step : (b + 1) * step].sum())
            neg = int(self.neg[b * step : (b + 1) * step].sum())
            if pos + neg:
                out.append(
                    {
                        "low": b / buckets,
                        "high": (b + 1) / buckets,
                        "n": pos + neg,
                        "observed": pos / (pos + neg),
                    }
                )
        return out

    def to_bytes(self) -> bytes:
        state = {
            "window": self.window,
            "all": _Counts(self.pos.tolist(), self.neg.tolist(), self.logloss, self.p_sum),
            "windows": {
                k: _Counts(pos.tolist(), neg.tolist(), extra[0], extra[1])
                for k, (pos, neg, extra) in self._windows.items()
            },
        }
        return msgspec.msgpack.encode(state)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Prequential:
        state = msgspec.msgpack.decode(blob, type=dict[str, float | _Counts | dict[int, _Counts]])
        window = state["window"]
        counts = state["all"]
        windows = state["windows"]
        assert isinstance(window, float) and isinstance(counts, _Counts)
        assert isinstance(windows, dict)
        m = cls(window)
        m.pos[:] = counts.pos
        m.neg[:] = counts.neg
        m.logloss, m.p_sum = counts.logloss, counts.p_sum
        for k, c in windows.items():
            m._windows[k] = (
                np.asarray(c.pos, dtype=np.int64),
                np.asarray(c.neg, dtype=np.int64),
                [c.logloss, c.p_sum],
            )
        return m

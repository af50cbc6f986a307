"""Prequential evaluation (predict, record, then learn): AUC, log loss and calibration, overall
and per event-time window, in bounded memory, and drift detected on the loss
(:mod:`liveprofile.learn.drift`).

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
from typing import Any, NamedTuple, cast

import msgspec
import numba
import numpy as np
import numpy.typing as npt

from liveprofile.errors import StateVersionError
from liveprofile.learn.drift import SETTINGS, Drift, DriftEvent, DriftState, page_hinkley

BINS = 2048
WINDOW_BINS = 128
_EPS = 1e-15
#: version of the stored metrics blob: 1 without drift state, 2 with it (1 is still read)
METRICS_VERSION = 2
_ENCODER = msgspec.msgpack.Encoder()


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


class _Stored(msgspec.Struct):
    window: float
    all: _Counts
    windows: dict[int, _Counts]
    version: int = 1
    drift: DriftState | None = None


class Scored(NamedTuple):
    """Predictions to record: ``p[k]`` of label ``y[k]``, in window ``where[k]``."""

    p: Any
    y: Any
    where: Any


class Bins(NamedTuple):
    """Score bins of positives and of negatives, and the sums of log loss and of predictions:
    the whole stream's (one row) or one row per window."""

    pos: Any
    neg: Any
    sums: Any


@numba.njit(cache=True, nogil=True)
def _record_all(scored, total, windows, ph, settings, fired):  # type: ignore[no-untyped-def]
    """:meth:`Prequential.record` of each of ``scored`` (:class:`Scored`) into ``total`` and
    ``windows`` (:class:`Bins`), the drift detector's state ``ph`` updated on each loss; row
    ``j`` of ``fired`` gets the ``j``-th detection (example, statistic, mean loss, examples);
    returns how many."""
    p, y, where = scored.p, scored.y, scored.where
    pos, neg, sums = total.pos, total.neg, total.sums
    w_pos, w_neg, w_sums = windows.pos, windows.neg, windows.sums
    n_fired = 0
    for k in range(p.shape[0]):
        q = min(max(p[k], _EPS), 1.0 - _EPS)
        loss = -math.log(q) if y[k] else -math.log(1.0 - q)
        n_ph, mean_ph = ph[0] + 1.0, ph[1]
        stat = page_hinkley(ph, settings, loss)
        if stat > 0.0:
            fired[n_fired, 0] = k
            fired[n_fired, 1] = stat
            fired[n_fired, 2] = mean_ph + (1.0 / n_ph) * (loss - mean_ph)
            fired[n_fired, 3] = n_ph
            n_fired += 1
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
    return n_fired


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
        #: the stored bytes of windows unchanged since they were last encoded (see to_bytes)
        self._encoded: dict[int, msgspec.Raw] = {}
        self.drift = Drift()

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
        self.drift.update(loss, ts, self.n)
        key = math.floor(ts / self.window)
        win = self._windows.get(key)
        if win is None:
            win = self._windows[key] = (
                np.zeros(WINDOW_BINS, dtype=np.int64),
                np.zeros(WINDOW_BINS, dtype=np.int64),
                [0.0, 0.0],
            )
        (win[0] if y else win[1])[b * WINDOW_BINS // BINS] += 1
        self._encoded.pop(key, None)
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
        for key in order:
            self._encoded.pop(key, None)
        wins = [self._windows[key] for key in order]
        w_pos = np.stack([w[0] for w in wins])
        w_neg = np.stack([w[1] for w in wins])
        w_sums = np.array([w[2] for w in wins], dtype=np.float64)
        where = np.array([slot[k] for k in keys.tolist()], dtype=np.int64)
        sums = np.array([self.logloss, self.p_sum])
        seen = self.n
        fired = np.zeros((len(p), 4))
        n_fired = _record_all(
            Scored(p, y, where),
            Bins(self.pos, self.neg, sums),
            Bins(w_pos, w_neg, w_sums),
            self.drift.state,
            SETTINGS,
            fired,
        )
        for k, stat, mean, examples in fired[:n_fired].tolist():
            event = DriftEvent(float(ts[int(k)]), seen + int(k) + 1, stat, mean, int(examples))
            self.drift.add(event)
        self.logloss, self.p_sum = float(sums[0]), float(sums[1])
        for j, (pos, neg, extra) in enumerate(wins):
            pos[:] = w_pos[j]
            neg[:] = w_neg[j]
            extra[0], extra[1] = float(w_sums[j, 0]), float(w_sums[j, 1])

    def add(self, other: Prequential) -> None:
        """Add ``other``'s predictions (another partition of the same task): score bins, losses
        and windows add up, so the AUC and log loss are those of both partitions' examples;
        drift detections are counted from both (:meth:`Drift.absorb`).

        >>> a, b = Prequential(window=10.0), Prequential(window=10.0)
        >>> a.record(0.9, True, 1.0); b.record(0.2, False, 12.0)
        >>> a.add(b)
        >>> a.summary()["n"], a.summary()["auc"], [w["n"] for w in a.windows()]
        (2, 1.0, [1, 1])
        """
        if other.window != self.window:
            raise ValueError(f"cannot add metrics of {other.window} s windows to {self.window} s")
        self.pos += other.pos
        self.neg += other.neg
        self.logloss += other.logloss
        self.p_sum += other.p_sum
        for key, (pos, neg, extra) in other._windows.items():
            self._encoded.pop(key, None)
            mine = self._windows.get(key)
            if mine is None:
                self._windows[key] = (pos.copy(), neg.copy(), list(extra))
            else:
                mine[0][:] += pos
                mine[1][:] += neg
                mine[2][0] += extra[0]
                mine[2][1] += extra[1]
        self.drift.absorb(other.drift)

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
            "drift": self.drift.summary(),
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
        """The stored metrics; windows no prediction was counted in since the last call are
        not encoded again (their bytes are kept), as most are on every commit of a stream."""
        windows = self._encoded
        for k, (pos, neg, extra) in self._windows.items():
            if k not in windows:
                counts = _Counts(pos.tolist(), neg.tolist(), extra[0], extra[1])
                windows[k] = msgspec.Raw(_ENCODER.encode(counts))
        state = _Stored(
            window=self.window,
            all=_Counts(self.pos.tolist(), self.neg.tolist(), self.logloss, self.p_sum),
            # the same bytes as the counts (msgspec writes a Raw as it is)
            windows=cast(dict[int, _Counts], {k: windows[k] for k in self._windows}),
            version=METRICS_VERSION,
            drift=self.drift.to_state(),
        )
        return _ENCODER.encode(state)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Prequential:
        """The metrics in ``blob``; a blob of a newer version than this code reads is refused.

        >>> m = Prequential(window=10.0)
        >>> m.record(0.9, True, 1.0)
        >>> Prequential.from_bytes(m.to_bytes()).summary() == m.summary()
        True
        """
        state = msgspec.msgpack.decode(blob, type=_Stored)
        if state.version > METRICS_VERSION:
            raise StateVersionError(
                f"stored metrics have version {state.version}, this version reads up to "
                f"{METRICS_VERSION}: upgrade liveprofile or replay into a new store"
            )
        window, counts, windows = state.window, state.all, state.windows
        m = cls(window)
        if state.drift is not None:
            m.drift = Drift.from_state(state.drift)
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

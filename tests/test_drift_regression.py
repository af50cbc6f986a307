"""Drift detection on a regression task's errors: the detector watches the absolute error relative
to the MAE so far, is River's Page-Hinkley on that stream, fires on a lasting rise of the errors and
not on a steady stream, adds up across partitions and survives a store round trip."""

from __future__ import annotations

import msgspec
import numpy as np
from river import drift as river_drift

from liveprofile.learn import drift
from liveprofile.learn.regression import (
    SCALE_EXAMPLES,
    RegressionMetrics,
    _StoredRegression,
    _Sums,
    metrics_from_bytes,
    relative_error,
)


def _stream(seed: int, rise_at: int, n: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero-inflated targets (most exposures spend nothing), predictions whose errors grow by
    ``factor`` from example ``rise_at`` on."""
    rng = np.random.default_rng(seed)
    y = np.where(rng.uniform(size=n) < 0.2, rng.exponential(50.0, n), 0.0)
    noise = rng.normal(0.0, 5.0, n) + np.where(rng.uniform(size=n) < 0.2, 30.0, 0.0)
    scale = np.where(np.arange(n) >= rise_at, factor, 1.0)
    return y + scale * noise, y


def _record(p: np.ndarray, y: np.ndarray) -> RegressionMetrics:
    m = RegressionMetrics(window=100.0)
    for k in range(len(p)):
        m.record(float(p[k]), float(y[k]), float(k))
    return m


def test_the_detector_is_page_hinkley_on_the_relative_errors() -> None:
    p, y = _stream(1, 6000, 12000, 3.0)
    m = _record(p, y)
    ph = river_drift.PageHinkley(
        min_instances=drift.MIN_INSTANCES, delta=drift.DELTA, threshold=drift.THRESHOLD,
        alpha=drift.ALPHA, mode="up",
    )  # fmt: skip
    fired, abs_err = [], 0.0
    for k in range(len(p)):
        err = abs(p[k] - y[k])
        if k >= SCALE_EXAMPLES:  # the first errors set the scale only
            ph.update(relative_error(err, abs_err / k))
            if ph.drift_detected:
                fired.append(k + 1)
        abs_err += err
    assert [e.seen for e in m.drift.events] == fired
    assert fired and all(seen > 6000 for seen in fired)  # the rise, and nothing before it
    assert fired[0] - 6000 < 1500  # soon after
    summary = m.summary()["drift"]
    assert summary["detections"] == len(fired) and summary["loss"] == "absolute error / MAE so far"


def test_a_steady_stream_raises_no_alarm_and_a_fall_neither() -> None:
    p, y = _stream(2, 10_000, 20_000, 1.0)
    assert _record(p, y).drift.count == 0
    p, y = _stream(3, 8000, 16_000, 0.3)  # the errors shrink: no alarm
    assert _record(p, y).drift.count == 0


def test_stored_drift_survives_and_partitions_add_up() -> None:
    p, y = _stream(4, 5000, 10_000, 4.0)
    m = _record(p, y)
    assert m.drift.count >= 1
    again = metrics_from_bytes(m.to_bytes())
    assert isinstance(again, RegressionMetrics)
    assert again.summary() == m.summary()
    assert again.drift.state.tolist() == m.drift.state.tolist()  # detection goes on from here
    other = _record(*_stream(5, 5000, 10_000, 4.0))
    again.add(other)
    assert again.drift.count == m.drift.count + other.drift.count
    # metrics stored before the detector existed still read, with no detections
    old = msgspec.msgpack.encode(_StoredRegression(1, 100.0, _Sums(3, 1.0, 1.0, 2.0, 3.0), {}))
    read = metrics_from_bytes(old)
    assert isinstance(read, RegressionMetrics)
    assert read.n == 3 and read.drift.count == 0

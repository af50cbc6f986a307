"""Drift detection on a task's prequential loss: the one-sided Page-Hinkley test.

Every prediction the pipeline scores and then learns (see :mod:`liveprofile.learn.metrics`) has a
log loss; the detector watches that stream, in the order the metrics see it, for a rise of its
mean. It is River's ``drift.PageHinkley`` with ``mode="up"`` (a falling loss is no alarm), the
same update to the last bit (a test replays River's detector beside this one), compiled so that it
runs inside the metrics' compiled pass and costs a few nanoseconds per example. Its state is four
numbers, stored with the task's metrics, so a restarted pipeline goes on detecting where it
stopped and the detections do not depend on how the stream was cut into batches.

The settings (1,000 examples before the first test, a tolerance of 0.05 nats per example, an
alarm when the cumulated excess loss reaches 200 nats) were chosen with ``benchmarks/drift.py``:
the lowest threshold of those tried that keeps the Complete Journey, which has no planted drift,
to about one alarm a month, and a tolerance from the range that keeps it there.

>>> import numpy as np
>>> state = fresh_state()
>>> losses = [0.3] * 2000 + [0.9] * 800
>>> [k for k, x in enumerate(losses) if page_hinkley(state, SETTINGS, x) > 0]
[2403]
"""

from __future__ import annotations

import math

import msgspec
import numba
import numpy as np
import numpy.typing as npt

#: the detector, as named in reports
DETECTOR = "page_hinkley"
#: examples seen (since the start or the last detection) before the test may fire
MIN_INSTANCES = 1000
#: rise of the loss over its running mean tolerated per example (nats)
DELTA = 0.05
#: cumulated excess loss that raises an alarm (nats)
THRESHOLD = 200.0
#: forgetting factor of the cumulated deviation (River's default)
ALPHA = 1.0 - 0.0001
#: drift events kept per task (the count of all of them is kept too)
KEEP_EVENTS = 100

# state slots: examples since reset, their mean loss, the cumulated deviation, its minimum
_N, _MEAN, _SUM, _MIN = 0, 1, 2, 3
#: the settings as the compiled test takes them (an argument, not a compiled-in constant, so a
#: cached compilation never keeps stale settings)
SETTINGS = np.array([MIN_INSTANCES, DELTA, THRESHOLD, ALPHA], dtype=np.float64)


def fresh_state() -> npt.NDArray[np.float64]:
    """The detector's state before any example (also its state after each detection)."""
    return np.array([0.0, 0.0, 0.0, math.inf])


@numba.njit(cache=True, nogil=True)
def page_hinkley(state, settings, x):  # type: ignore[no-untyped-def]
    """Update ``state`` with the loss ``x``; the test statistic if it fires (and then the state
    starts afresh, as River's detector does on its next update), else 0.0. ``settings``:
    :data:`SETTINGS`."""
    state[_N] += 1.0
    state[_MEAN] += (1.0 / state[_N]) * (x - state[_MEAN])
    state[_SUM] = settings[3] * state[_SUM] + (x - state[_MEAN]) - settings[1]
    if state[_SUM] < state[_MIN]:
        state[_MIN] = state[_SUM]
    if state[_N] >= settings[0]:
        stat = state[_SUM] - state[_MIN]
        if stat > settings[2]:
            state[_N] = 0.0
            state[_MEAN] = 0.0
            state[_SUM] = 0.0
            state[_MIN] = math.inf
            return stat
    return 0.0


class DriftEvent(msgspec.Struct, array_like=True):
    """One detection: the event time of the example that fired the test, the examples the task
    had scored by then (``seen``), the test statistic, the mean loss since the previous reset
    and how many examples that mean covers."""

    ts: float
    seen: int
    statistic: float
    mean_loss: float
    examples: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "ts": self.ts,
            "seen": self.seen,
            "statistic": round(self.statistic, 4),
            "mean_loss": round(self.mean_loss, 6),
            "examples": self.examples,
        }


class DriftState(msgspec.Struct, array_like=True):
    """What is stored: the detector's four numbers, the detections so far and the latest ones."""

    state: list[float]
    count: int = 0
    events: list[DriftEvent] = []


class Drift:
    """The detector of one task and the drift events it raised.

    >>> d = Drift()
    >>> for k in range(3000):
    ...     d.update(0.2 if k < 2000 else 1.0, ts=float(k), seen=k + 1)
    >>> d.count, d.events[0].seen, d.events[0].ts
    (1, 2288, 2287.0)
    >>> Drift.from_state(d.to_state()).summary() == d.summary()
    True
    """

    def __init__(self) -> None:
        self.state = fresh_state()
        self.count = 0
        self.events: list[DriftEvent] = []

    def update(self, loss: float, ts: float, seen: int) -> None:
        """One example's loss, scored at event time ``ts``, the ``seen``-th of its task."""
        before_n, before_mean = int(self.state[_N]) + 1, float(self.state[_MEAN])
        stat = page_hinkley(self.state, SETTINGS, loss)
        if stat > 0.0:
            mean = before_mean + (1.0 / before_n) * (loss - before_mean)
            self.add(DriftEvent(ts, seen, float(stat), mean, before_n))

    def add(self, event: DriftEvent) -> None:
        self.count += 1
        self.events.append(event)
        del self.events[:-KEEP_EVENTS]

    def absorb(self, other: Drift) -> None:
        """Count ``other``'s detections too (another partition's detector of the same task);
        the latest events of both are kept in event-time order. The detector's own running
        state stays this one's: detection runs per partition."""
        self.count += other.count
        self.events = sorted(self.events + other.events, key=lambda e: (e.ts, e.seen))
        del self.events[:-KEEP_EVENTS]

    def summary(self) -> dict[str, object]:
        return {
            "detector": DETECTOR,
            "threshold": THRESHOLD,
            "delta": DELTA,
            "min_instances": MIN_INSTANCES,
            "detections": self.count,
            "events": [e.as_dict() for e in self.events],
        }

    def to_state(self) -> DriftState:
        return DriftState(self.state.tolist(), self.count, list(self.events))

    @classmethod
    def from_state(cls, stored: DriftState) -> Drift:
        d = cls()
        d.state[:] = stored.state
        d.count = stored.count
        d.events = list(stored.events)
        return d

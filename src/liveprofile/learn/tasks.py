"""Learning tasks: which events give examples, how labels are derived, pending examples.

An immediate task labels an example from the event itself (``value`` >= threshold, or its type).
A delayed task opens a *pending example* on every exposure (features and prediction as of that
moment), up to ``open_per_key`` awaiting a conversion per (user, key), and one per (user, key,
event time): a pending example is identified by them. Each becomes positive when a conversion
with the same user and key follows within its window, and negative once the watermark (the
latest event time seen) passes its deadline. A conversion labels every open example of its user
and key whose window holds it. Pending examples are committed with the rest of the state.

The step (:mod:`liveprofile.engine.kernel`, over the pending pool of :mod:`liveprofile.engine.pool`
and the chains of :mod:`liveprofile.engine.chains`) does all of this; :class:`TaskState` holds a
task's learner, metrics and, between steps, its open examples as objects (as loaded from the
store, or handed back by the step).

>>> from liveprofile.config import LabelConfig, TaskConfig
>>> label = LabelConfig(kind="delayed", conversion=["purchase"])
>>> task = TaskConfig("buy", on=["view"], label=label)
>>> state = TaskState(task, learner=None, window=86400.0)
>>> opened = [Pending("u1", "i1", "i1", ts, ts + 86400.0, b"", b"") for ts in (100.0, 200.0)]
>>> state.give_pending(opened, opened)
>>> [p.open_ts for p in state.waiting["u1", "i1"]]
[100.0, 200.0]
>>> [p.key for p in state.peek_due(100.0 + 86400.0 + 1)]
['i1']
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.config import TaskConfig
from liveprofile.learn.base import Learner
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.regression import RegressionMetrics
from liveprofile.store.codec import VersionedCodec

PENDING_SCHEMA = 2


class Pending(msgspec.Struct, array_like=True, gc=False):
    """An exposure waiting for its window to close."""

    user: str
    key: str
    item: str | None
    open_ts: float
    deadline: float
    idx: bytes  # array('q') of feature indices
    val: bytes  # array('d') of feature values
    p: float = math.nan  # prediction made at exposure time
    converted: bool = False
    total: float = 0.0  # the value of its conversions so far (target = "value")

    @property
    def id(self) -> PendingId:
        return (self.user, self.key, self.open_ts)


#: a pending example is identified by user, key and exposure time
PendingId = tuple[str, str, float]


class TaskState:
    """One task's learner, metrics and pending examples (as objects between steps).

    Delayed examples are learned when their window closes, converted or not: learning positives
    at conversion and negatives at the deadline would show the learner a stream richer in
    positives than the truth (the delayed-feedback bias). With ``label.feedback`` ``fnc`` or
    ``fnw`` they are learned at once as negatives and again as positives at conversion, with a
    correction (:mod:`liveprofile.learn.delayed`).
    """

    def __init__(self, config: TaskConfig, learner: Learner | None, window: float) -> None:
        self.config = config
        self.name = config.name
        self.learner = learner
        self.metrics: Prequential | RegressionMetrics = (
            RegressionMetrics(window) if config.regression else Prequential(window)
        )
        label = config.label
        self.delayed = label.kind == "delayed"
        #: learns the sum of the conversions' value rather than whether one came
        self.regression = config.regression
        self.pending: dict[PendingId, Pending] = {}
        #: the unconverted pending examples per (user, key), by exposure time: what a
        #: conversion can still convert
        self.waiting: dict[tuple[str, str], list[Pending]] = {}
        self._heap: list[tuple[float, float, str, str]] = []

    def _add(self, pending: Pending) -> None:
        pid = pending.id
        self.pending[pid] = pending
        if self.regression or not pending.converted:
            waiting = self.waiting.setdefault((pending.user, pending.key), [])
            at = len(waiting)  # by exposure time; a late exposure goes before later ones
            while at > 0 and waiting[at - 1].open_ts > pending.open_ts:
                at -= 1
            waiting.insert(at, pending)
        heapq.heappush(self._heap, (pending.deadline, pending.open_ts, pending.user, pending.key))

    def take_pending(self) -> tuple[list[Pending], dict[tuple[str, str], list[Pending]]]:
        """Hand over the open pending examples, and those a conversion can still convert by
        (user, key), by exposure time; the task holds none until :meth:`give_pending`."""
        pending, waiting = list(self.pending.values()), self.waiting
        self.pending, self.waiting, self._heap = {}, {}, []
        return pending, waiting

    def give_pending(
        self, pending: list[Pending], waiting: list[Pending], watermark: float = -math.inf
    ) -> None:
        """Take back open pending examples; ``waiting``: those a conversion can still convert
        (of each user and key, by exposure time). ``watermark``, the step's, is not needed:
        which examples of a ``wait`` task were learned follows from their exposure time and the
        watermark the step takes them at again."""
        self.pending = {p.id: p for p in pending}
        self.waiting = {}
        for p in waiting:
            self.waiting.setdefault((p.user, p.key), []).append(p)
        self._heap = [(p.deadline, p.open_ts, p.user, p.key) for p in pending]
        heapq.heapify(self._heap)

    def _unwait(self, pending: Pending) -> None:
        """Drop ``pending`` from the examples a conversion can still convert, if it is one."""
        wkey = (pending.user, pending.key)
        waiting = self.waiting.get(wkey)
        if waiting is None:
            return
        for j, p in enumerate(waiting):
            if p is pending:
                del waiting[j]
                if not waiting:
                    del self.waiting[wkey]
                return

    def peek_due(self, watermark: float) -> Iterator[Pending]:
        """The pending examples whose window closed before ``watermark`` (a step closes them)."""
        heap = self._heap
        stack = [0] if heap else []
        while stack:
            i = stack.pop()
            deadline, open_ts, user, key = heap[i]
            if deadline >= watermark:
                continue
            pending = self.pending.get((user, key, open_ts))
            if pending is not None:
                yield pending
            stack.extend(c for c in (2 * i + 1, 2 * i + 2) if c < len(heap))

    def restore_log(self, logs: Iterator[PendingLog], watermark: float) -> None:
        """Rebuild the pending examples from committed logs, oldest first.

        An example is closed exactly when the watermark passes its deadline, so the examples
        still open are those created in the logs with a deadline not before the watermark.
        """
        for log in logs:
            for pending in log.created:
                if pending.deadline >= watermark:
                    self._add(pending)
            if self.regression:
                # the examples created in a log hold their total as of its end already
                made = {p.id for p in log.created}
                for pid, value in zip(log.converted, log.values, strict=True):
                    found = self.pending.get(pid)
                    if found is not None and pid not in made:
                        found.converted = True
                        found.total += value
                continue
            for pid in log.converted:
                found = self.pending.get(pid)
                if found is not None and not found.converted:
                    found.converted = True
                    self._unwait(found)


class PendingLog(msgspec.Struct, array_like=True):
    """What one batch did to a task's pending examples: the ones it opened (as they are at the
    end of the batch) and the ones opened earlier that it converted."""

    created: list[Pending]
    converted: list[PendingId]
    #: the value each conversion added to its example (regression tasks; else empty)
    values: list[float] = []

    def __bool__(self) -> bool:
        return bool(self.created or self.converted)

    def max_deadline(self) -> float:
        return max((p.deadline for p in self.created), default=float("-inf"))

    def columns(self) -> PendingColumns:
        """The same log laid out as columns (how logs are stored)."""
        created, conv = self.created, self.converted
        names = sorted(
            {p.user for p in created}
            | {p.key for p in created}
            | {p.item for p in created if p.item is not None}
            | {u for u, _, _ in conv}
            | {k for _, k, _ in conv}
        )
        at = {name: j for j, name in enumerate(names)}

        def refs(values: list[str | None]) -> bytes:
            return np.array([-1 if v is None else at[v] for v in values], np.int32).tobytes()

        flen = np.fromiter((len(p.idx) // 8 for p in created), np.uint32, len(created))
        return PendingColumns(
            names,
            refs([p.user for p in created]),
            refs([p.key for p in created]),
            refs([p.item for p in created]),
            np.array([p.open_ts for p in created], np.float64).tobytes(),
            np.array([p.deadline for p in created], np.float64).tobytes(),
            np.array([p.p for p in created], np.float64).tobytes(),
            np.array([p.converted for p in created], np.bool_).tobytes(),
            flen.tobytes(),
            np.frombuffer(b"".join(p.idx for p in created), np.int64).astype(np.uint32).tobytes(),
            *split_ones(np.frombuffer(b"".join(p.val for p in created), np.float64)),
            refs([u for u, _, _ in conv]),
            refs([k for _, k, _ in conv]),
            np.array([o for _, _, o in conv], np.float64).tobytes(),
            # only regression tasks have totals: the logs of the others stay as they were
            np.array([p.total for p in created], np.float64).tobytes()
            if self.values or any(p.total for p in created)
            else b"",
            np.array(self.values, np.float64).tobytes(),
        )


class PendingColumns(msgspec.Struct, array_like=True):
    """A :class:`PendingLog` as columns: numbers as raw little-endian arrays, one entry per
    created example, their features concatenated (``n_features`` each, indices as uint32).
    Users, keys and items are int32 positions in ``names`` (sorted; -1: no item)."""

    names: list[str]
    users: bytes
    keys: bytes
    items: bytes
    open_ts: bytes  # float64
    deadline: bytes  # float64
    p: bytes  # float64
    converted: bytes  # bool
    n_features: bytes  # uint32
    idx: bytes  # uint32
    ones: bytes  # one bit per feature: its value is 1.0 (most are: one-hot features)
    val: bytes  # float64, the values of the other features
    converted_users: bytes
    converted_keys: bytes
    converted_open_ts: bytes  # float64
    totals: bytes = b""  # float64 per created example (regression tasks; else zeros or empty)
    converted_values: bytes = b""  # float64 per conversion (regression tasks; else empty)

    def __bool__(self) -> bool:
        return bool(self.users or self.converted_users)

    def columns(self) -> PendingColumns:
        return self

    def max_deadline(self) -> float:
        deadline = np.frombuffer(self.deadline, np.float64)
        return float(deadline.max()) if len(deadline) else float("-inf")

    def log(self) -> PendingLog:
        """The examples as :class:`Pending` objects."""
        names = [*self.names, None]  # position -1: no item

        def strings(refs: bytes) -> list[Any]:
            return [names[j] for j in np.frombuffer(refs, np.int32).tolist()]

        ends = np.cumsum(np.frombuffer(self.n_features, np.uint32), dtype=np.int64) * 8
        starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
        idx = np.frombuffer(self.idx, np.uint32).astype(np.int64).tobytes()
        val = join_ones(self.ones, self.val, len(idx) // 8)
        n = len(self.open_ts) // 8
        totals = np.frombuffer(self.totals, np.float64) if self.totals else np.zeros(n)
        created = [
            Pending(u, k, it, o, d, idx[a:b], val[a:b], p, c, total)
            for u, k, it, o, d, p, c, a, b, total in zip(
                strings(self.users),
                strings(self.keys),
                strings(self.items),
                np.frombuffer(self.open_ts, np.float64).tolist(),
                np.frombuffer(self.deadline, np.float64).tolist(),
                np.frombuffer(self.p, np.float64).tolist(),
                np.frombuffer(self.converted, np.bool_).tolist(),
                starts.tolist(),
                ends.tolist(),
                totals.tolist(),
                strict=True,
            )
        ]
        opened = np.frombuffer(self.converted_open_ts, np.float64).tolist()
        converted = list(
            zip(strings(self.converted_users), strings(self.converted_keys), opened, strict=True)
        )
        values = np.frombuffer(self.converted_values, np.float64).tolist()
        return PendingLog(created, converted, values)


def split_ones(val: npt.NDArray[np.float64]) -> tuple[bytes, bytes]:
    """Feature values as a bit per value that is 1.0 and the other values (see
    :func:`join_ones`); a third of the bytes, for hashed one-hot features.

    >>> join_ones(*split_ones(np.array([1.0, 0.5, 1.0, -0.0])), 4) == np.array(
    ...     [1.0, 0.5, 1.0, -0.0]).tobytes()
    True
    """
    one = val == 1.0
    return np.packbits(one).tobytes(), val[~one].tobytes()


def join_ones(ones: bytes, rest: bytes, n: int) -> bytes:
    """The ``n`` float64 values :func:`split_ones` split, as bytes."""
    one = np.unpackbits(np.frombuffer(ones, np.uint8), count=n).astype(np.bool_)
    val = np.ones(n, np.float64)
    val[~one] = np.frombuffer(rest, np.float64)
    return val.tobytes()


#: versioned bytes of one batch's pending logs (task name -> log), compressed at zstd's level -1:
#: on Complete Journey's a seventh less CPU than level 1 for a sixteenth more bytes, on rows
#: that live only until their examples' windows close
_codec = VersionedCodec(
    dict[str, PendingColumns],
    schema=PENDING_SCHEMA,
    what="pending log",
    compress="zstd",
    level=-1,
)
#: how stores written before the columns hold their pending logs
_codec_v1 = VersionedCodec(dict[str, PendingLog], schema=1, what="pending log", compress="zlib")


def encode_logs(logs: Mapping[str, PendingLog | PendingColumns]) -> bytes:
    return _codec.encode({name: log.columns() for name, log in logs.items()})


def decode_logs(blob: bytes) -> dict[str, PendingLog]:
    if _codec_v1.accepts(blob):
        return _codec_v1.decode(blob)
    return {name: columns.log() for name, columns in _codec.decode(blob).items()}

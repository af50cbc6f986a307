"""A task's model handed to a store as the coordinates a batch changed, not as a whole.

A built-in learner (FTRL, OGD, linreg, tuned of those) records which coordinates its learn
operations touch (:meth:`~liveprofile.learn.linear._HashedLinear.take_changes`). A store that
keeps a model as a whole checkpoint plus deltas (SQLite's ``meta_delta``, Redis's
``meta_delta:`` lists) takes, instead of the whole checkpoint each batch, a :class:`ModelUpdate`
(:meth:`ModelSink.stage_model`): the values at those coordinates in
:mod:`~liveprofile.learn.ckptdelta`'s delta layout, numbered per :class:`ModelTracker`. The
store writes it as a delta only when it wrote the update numbered just before from the same
tracker (so it holds exactly the model the delta starts from); otherwise (first write, a
failed or skipped commit, another writer, deltas adding up to half the checkpoint, a change of
layout) it writes the whole checkpoint, which :meth:`ModelUpdate.whole` makes from the learner
then. Reading the whole checkpoint and replaying its deltas gives back, byte for byte,
:func:`~liveprofile.learn.registry.dump_learner` of the learner. River learners cannot say which
coordinates changed: their checkpoints stay whole (``stage_change`` returns the blob).

>>> from liveprofile.learn.ckptdelta import replay
>>> from liveprofile.learn.linear import FTRLProximal
>>> model = FTRLProximal(bits=12)
>>> for n in range(300):
...     model.learn_one({f"f{n}": 1.0, "bias": 1.0}, n % 2 == 0)
>>> tracker = ModelTracker(model)
>>> first = tracker.update()
>>> first.number, first.delta is None
(1, True)
>>> base = first.whole()
>>> model.learn_one({"a": 1.0, "b": 1.0}, True)
>>> second = tracker.update()
>>> second.number, len(second.delta) < len(base) // 20
(2, True)
>>> replay(base, [second.delta]) == dump_learner(model)
True
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol, runtime_checkable

import msgspec

from liveprofile.learn.ckptdelta import DELTA_SCHEMA, _Delta
from liveprofile.learn.registry import dump_learner
from liveprofile.store.base import delta_fits


class ModelUpdate:
    """One commit's change of a task's model: ``delta`` (None: only a whole write will do)
    follows update ``number - 1`` of the tracker ``source``; :meth:`whole` is the whole
    checkpoint, valid until the learner runs again (stores call it inside their commit)."""

    __slots__ = ("_whole", "delta", "number", "source")

    def __init__(
        self, source: bytes, number: int, delta: bytes | None, whole: Callable[[], bytes]
    ) -> None:
        self.source, self.number, self.delta, self._whole = source, number, delta, whole

    def whole(self) -> bytes:
        return self._whole()

    def delta_after(
        self, source: bytes | None, number: int, delta_bytes: int, size: int
    ) -> bytes | None:
        """This update's delta when it applies on update ``number`` of tracker ``source``, the
        last one a store wrote, and keeps the deltas after that store's whole checkpoint of
        ``size`` bytes (``delta_bytes`` so far) within their share of it (:func:`delta_fits`);
        None: the store writes this update whole."""
        delta = self.delta
        if delta is None or source != self.source or number != self.number - 1:
            return None
        return delta if delta_fits(delta_bytes, size, delta) else None


@runtime_checkable
class ModelSink(Protocol):
    """A store that writes model updates (in its next commit) rather than whole blobs."""

    writes_model_deltas: bool

    def stage_model(self, name: str, update: ModelUpdate) -> None:
        """Write ``update`` as meta blob ``name`` in the next commit (a failed commit drops
        it)."""


class ModelTracker:
    """Numbers a learner's updates and makes their deltas (see the module's doc)."""

    def __init__(self, learner: Any) -> None:
        self.learner = learner
        self.source = secrets.token_bytes(8)
        self.number = 0
        self._sizes: dict[str, tuple[str, int]] | None = None
        track = getattr(learner, "track_changes", None)
        self.tracked = bool(track is not None and track())

    def update(self) -> ModelUpdate:
        """The change since the previous update (the first one has no delta)."""
        learner = self.learner
        changes = learner.take_changes() if self.tracked else None
        arrays = {name: a.reshape(-1) for name, a in learner.arrays().items()}
        sizes = {name: (str(a.dtype), a.size) for name, a in arrays.items()}
        delta = None
        if changes is not None and sizes == self._sizes and changes.keys() == arrays.keys():
            out = {
                name: (index.astype("<u4").tobytes(), arrays[name][index].tobytes())
                for name, index in changes.items()
                if len(index)
            }
            delta = msgspec.msgpack.encode(_Delta(DELTA_SCHEMA, learner.params(), out))
        self._sizes = sizes
        self.number += 1
        return ModelUpdate(self.source, self.number, delta, lambda: dump_learner(learner))


def model_sink(store: object) -> ModelSink | None:
    """``store`` when it takes model updates, else None (it takes whole blobs)."""
    if getattr(store, "writes_model_deltas", False) and isinstance(store, ModelSink):
        return store
    return None


def stage_change(
    sink: ModelSink | None,
    trackers: MutableMapping[str, ModelTracker],
    name: str,
    learner: Any,
) -> bytes | None:
    """Stage ``learner``'s change as meta blob ``name`` on ``sink`` and return None, or return
    its whole checkpoint (no sink, or a learner that cannot track its changes)."""
    if sink is None:
        return dump_learner(learner)
    tracker = trackers.get(name)
    if tracker is None or tracker.learner is not learner:
        tracker = trackers[name] = ModelTracker(learner)
    if not tracker.tracked:
        return dump_learner(learner)
    sink.stage_model(name, tracker.update())
    return None

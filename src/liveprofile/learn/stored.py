"""Reading a task's model from a store, in either of its stored layouts.

A one-writer store (replay, Redis Streams worker) keeps each task's model as one blob
(:func:`~liveprofile.learn.registry.dump_learner`); Kafka workers and the Flink job with
``run.shared_model`` keep it as rows of coordinates under a header
(:func:`~liveprofile.store.layout.model_namespace`). The read API and the recommender read both
through :class:`StoredModels`.

>>> from liveprofile.config import LearnerConfig
>>> from liveprofile.learn.registry import dump_learner, make_learner
>>> from liveprofile.store.layout import model_meta
>>> from liveprofile.store.memory import MemoryStore
>>> store = MemoryStore()
>>> model = make_learner(LearnerConfig(kind="ogd"), bits=8)
>>> model.learn_one({"a": 1.0}, True)
>>> store.commit({}, {model_meta("like"): dump_learner(model)})
>>> StoredModels(store).get("like", seq=1).predict_proba_one({"a": 1.0}) == model.predict_proba_one(
...     {"a": 1.0})
True
>>> StoredModels(store).get("other", seq=1) is None
True
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from liveprofile.learn.base import Learner
from liveprofile.learn.registry import load_learner, make_learner
from liveprofile.store.base import Store
from liveprofile.store.codec import damaged
from liveprofile.store.layout import (
    MODEL_LEARNED,
    ModelHeader,
    decode_model_header,
    model_meta,
    model_namespace,
    parse_model_field,
)


def shared_learned(store: Store, task: str) -> int:
    """Examples a task's shared model has learned, over all workers (0: none yet)."""
    (count,) = store.read(model_namespace(task), [MODEL_LEARNED])
    return 0 if count is None else int(count)


def load_shared(store: Store, task: str, header: ModelHeader) -> Learner:
    """A task's shared model as one in-memory learner (every stored coordinate)."""
    from liveprofile.config import LearnerConfig

    params = {k: v for k, v in header.params.items() if k != "bits"}
    bits = int(header.params["bits"])
    learner = make_learner(LearnerConfig(kind=header.kind, params=params), bits)
    arrays = learner.arrays()  # type: ignore[attr-defined]
    rows = learner.rows()  # type: ignore[attr-defined]
    with damaged("shared model", task):
        for field, value in store.scan(model_namespace(task)):
            name, index = parse_model_field(field)
            if name is None:
                rows[index] = np.frombuffer(value, dtype="<f8")
            elif name != MODEL_LEARNED:
                arrays[name][index] = np.frombuffer(value, dtype="<f8")[0]
    return learner


class StoredModels:
    """Tasks' models as a store has them, kept until they change.

    A whole-model blob is read again when the store's checkpoint sequence ``seq`` moves; a
    shared model when its count of learned examples moved, at most every ``min_reload_s``.
    """

    def __init__(
        self,
        store: Store,
        min_reload_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.min_reload_s = min_reload_s
        self._clock = clock
        #: task -> (shared?, version: seq or learned count, loaded at, learner)
        self._cache: dict[str, tuple[bool, int, float, Learner]] = {}

    def get(self, task: str, seq: int) -> Learner | None:
        """The task's model (None: the store has none yet)."""
        cached = self._cache.get(task)
        now = self._clock()
        if cached is not None:
            shared, version, loaded, learner = cached
            if not shared and version == seq:
                return learner
            if shared and (now - loaded < self.min_reload_s or version == self._learned(task)):
                return learner
        blob = self.store.get_meta(model_meta(task))
        if blob is None:
            return None
        header = decode_model_header(blob)
        if header is None:
            with damaged("meta row", model_meta(task)):
                learner = load_learner(blob)
            self._cache[task] = (False, seq, now, learner)
        else:
            version = self._learned(task)
            learner = load_shared(self.store, task, header)
            self._cache[task] = (True, version, now, learner)
        return learner

    def _learned(self, task: str) -> int:
        return shared_learned(self.store, task)

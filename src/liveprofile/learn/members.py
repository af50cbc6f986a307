"""River classifiers as learners of the pipeline, and as members of a tuned learner.

:func:`river_model` builds a River classifier named by a learner's ``kind`` (``hoeffding``, River's
``tree.HoeffdingTreeClassifier``) or by ``model`` (``kind = "river"``). :class:`RiverMember` runs
one inside :class:`~liveprofile.learn.tuned.TunedLearner`, so a Hoeffding tree (or any River
classifier) can challenge FTRL and OGD settings in shadow: it takes the tuned learner's batch of
operations, one at a time, on the same hashed features (a dict of feature index to value, as
:func:`~liveprofile.learn.base.sparse_example` gives them), and keeps its state as named arrays
like the built-in members. River models have no format but pickle, so its arrays are that pickle
as bytes and the River version that wrote it; loading refuses another River version, as
:func:`~liveprofile.learn.registry.load_learner` does for a River learner.

>>> member = RiverMember("hoeffding", {"grace_period": 10})
>>> kinds = np.array([3, 3, 1], np.int8)
>>> starts = np.array([0, 1, 2, 3])
>>> ops = OpArrays(kinds, starts, np.array([7, 9, 7]), np.ones(3), np.array([1.0, 0, 0]))
>>> out = member.run_arrays(ops)
>>> out.shape, bool(0.0 <= out[2] <= 1.0)
((3,), True)
>>> again = RiverMember("hoeffding", {"grace_period": 10})
>>> again.set_arrays(member.arrays())
>>> again.model.predict_proba_one({7: 1.0}) == member.model.predict_proba_one({7: 1.0})
True
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pickle
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from liveprofile.errors import StateVersionError
from liveprofile.learn.base import LEARN, PREDICT, OpArrays, sparse_example

F64 = npt.NDArray[np.float64]

#: River classes named by a learner kind of their own
RIVER_KINDS = {"hoeffding": "tree.HoeffdingTreeClassifier"}


def river_model(kind: str, params: Mapping[str, Any], model: str | None = None) -> Any:
    """A fresh River estimator for learner ``kind`` (``hoeffding``, or ``river`` with ``model``
    such as ``"linear_model.LogisticRegression"``); ``ValueError`` if there is none.

    >>> type(river_model("hoeffding", {})).__name__
    'HoeffdingTreeClassifier'
    """
    name = model if kind == "river" else RIVER_KINDS.get(kind)
    if name is None:
        raise ValueError(f"no River model for learner kind {kind!r} (model = {model!r})")
    module_name, _, class_name = f"river.{name}".rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**params)


def river_version() -> str:
    return importlib.metadata.version("river")


class RiverMember:
    """A River classifier in a tuned learner (see the module's docstring). It learns operations
    unweighted: a tuned learner with one is no learner for ``feedback = "fnw"``."""

    def __init__(self, kind: str, params: Mapping[str, Any], model: str | None = None) -> None:
        self.kind, self.river = kind, model
        self.model = river_model(kind, params, model)
        self.params = dict(params)

    def learn_one(self, x: Mapping[Hashable, float], y: bool) -> None:
        self.model.learn_one(x, y)

    def predict_proba_one(self, x: Mapping[Hashable, float]) -> Mapping[bool, float]:
        return self.model.predict_proba_one(x)  # type: ignore[no-any-return]

    def run_arrays(self, ops: OpArrays) -> F64:
        """Each operation in order: the probability of a positive if it predicts (else NaN),
        then learn its label if it learns."""
        out = np.full(len(ops.kinds), np.nan)
        model = self.model
        # plain ints and floats: the model's state (and its checkpoint) does not depend on the
        # array types the operations came in
        idx, val = np.asarray(ops.idx).tolist(), np.asarray(ops.val).tolist()
        starts, ys = ops.starts.tolist(), ops.ys
        for k, kind in enumerate(ops.kinds.tolist()):
            x = sparse_example(idx, val, starts[k], starts[k + 1])
            if kind & PREDICT:
                out[k] = float(model.predict_proba_one(x).get(True, 0.0))
            if kind & LEARN:
                model.learn_one(x, bool(ys[k] > 0.5))
        return out

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        blob = pickle.dumps(self.model, protocol=pickle.HIGHEST_PROTOCOL)
        return {
            "river": np.frombuffer(river_version().encode(), np.uint8),
            "model": np.frombuffer(blob, np.uint8),
        }

    def set_arrays(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        version = np.asarray(arrays["river"], np.uint8).tobytes().decode()
        if version != river_version():
            raise StateVersionError(
                f"a tuned member {self.kind} was saved by River {version}, this is River "
                f"{river_version()}: retrain it (liveprofile warm-start) with this version"
            )
        self.model = pickle.loads(np.asarray(arrays["model"], np.uint8).tobytes())

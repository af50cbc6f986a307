"""Building learners from config, and saving them as explicit, versioned checkpoints.

Built-in learners are saved as their hyperparameters plus named arrays; nothing is a pickle of
live objects. River models (any River classifier, including the Hoeffding tree) have no format of
their own besides pickle, so their checkpoint is a pickle inside the same versioned envelope, with
the River version it was written by, and loading refuses a different River version.

>>> from liveprofile.config import LearnerConfig
>>> model = make_learner(LearnerConfig(kind="ftrl", params={"alpha": 0.2}), bits=12)
>>> model.learn_one({"a": 1.0}, True)
>>> again = load_learner(dump_learner(model))
>>> again.predict_proba_one({"a": 1.0}) == model.predict_proba_one({"a": 1.0})
True
"""

from __future__ import annotations

import pickle
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.config import LearnerConfig
from liveprofile.errors import ConfigError, StateVersionError
from liveprofile.learn.base import Learner
from liveprofile.learn.linear import FTRLProximal, LogisticOGD, _HashedLinear
from liveprofile.learn.members import RIVER_KINDS, river_model, river_version
from liveprofile.learn.regression import LinearOGD
from liveprofile.learn.tuned import TunedLearner

CHECKPOINT_SCHEMA = 2
_BUILTIN: dict[str, type[_HashedLinear]] = {
    "ftrl": FTRLProximal,
    "ogd": LogisticOGD,
    "linreg": LinearOGD,
    "tuned": TunedLearner,
}


def make_learner(config: LearnerConfig, bits: int = 20) -> Learner:
    """A fresh learner for a task; ``bits`` is the hashed feature space of the pipeline."""
    params = dict(config.params)
    try:
        if config.kind in _BUILTIN:
            return _BUILTIN[config.kind](**params, bits=bits)
        if config.kind not in RIVER_KINDS and (config.kind != "river" or config.model is None):
            raise ConfigError(
                f"unknown learner kind {config.kind!r}: use ftrl, ogd, tuned (a champion "
                "and challengers), hoeffding, linreg (a regressor), or river with model = "
                "'linear_model.LogisticRegression' (any River classifier, or regressor for a "
                "task with target = 'value')"
            )
        return river_model(config.kind, params, config.model)  # type: ignore[no-any-return]
    except (TypeError, ValueError, ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot build learner {config.kind!r} with {params}: {exc}") from None


class _Array(msgspec.Struct, array_like=True):
    """A numpy array as bytes: dense, or only its non-zero entries (hashed weight vectors are
    mostly zeros until the model has seen a lot of data)."""

    dtype: str
    size: int
    values: bytes
    positions: bytes | None = None  # uint32 positions of ``values`` when sparse

    @classmethod
    def of(cls, a: npt.NDArray[Any]) -> _Array:
        flat = a.reshape(-1)
        nonzero = np.flatnonzero(flat)
        if len(nonzero) < 0.6 * flat.size:
            positions = nonzero.astype(np.uint32).tobytes()
            return cls(str(a.dtype), flat.size, flat[nonzero].tobytes(), positions)
        return cls(str(a.dtype), flat.size, flat.tobytes())

    def array(self) -> npt.NDArray[Any]:
        values = np.frombuffer(self.values, dtype=self.dtype)
        if self.positions is None:
            return values
        out = np.zeros(self.size, dtype=self.dtype)
        out[np.frombuffer(self.positions, dtype=np.uint32)] = values
        return out


class _Checkpoint(msgspec.Struct):
    schema: int
    kind: str
    params: dict[str, Any]
    arrays: dict[str, _Array] = {}
    river_version: str | None = None
    payload: bytes | None = None


def dump_learner(learner: Learner) -> bytes:
    """Versioned bytes of a learner's whole state."""
    if isinstance(learner, _HashedLinear):
        arrays = {name: _Array.of(a) for name, a in learner.arrays().items()}
        ckpt = _Checkpoint(CHECKPOINT_SCHEMA, learner.kind, learner.params(), arrays)
    else:
        ckpt = _Checkpoint(
            CHECKPOINT_SCHEMA,
            "river",
            {"class": f"{type(learner).__module__}.{type(learner).__qualname__}"},
            river_version=river_version(),
            payload=pickle.dumps(learner, protocol=pickle.HIGHEST_PROTOCOL),
        )
    return msgspec.msgpack.encode(ckpt)


def tuning_of_checkpoint(blob: bytes | None) -> dict[str, Any]:
    """``{"tuning": ...}`` of a saved tuned learner (its decisions and recent losses), read
    without rebuilding its members; ``{}`` for any other checkpoint.

    >>> from liveprofile.learn.tuned import TunedLearner
    >>> tuning_of_checkpoint(dump_learner(TunedLearner(bits=8)))["tuning"]["champion"]
    'ftrl()'
    >>> tuning_of_checkpoint(None)
    {}
    """
    if blob is None:
        return {}
    ckpt = msgspec.msgpack.decode(blob, type=_Checkpoint)
    if ckpt.kind != TunedLearner.kind or ckpt.schema != CHECKPOINT_SCHEMA:
        return {}
    shell = TunedLearner(**{**ckpt.params, "challengers": [], "hold": 1, "bits": 4})
    shell.specs = [ckpt.params["champion"], *ckpt.params["challengers"]]
    shell.loss = ckpt.arrays["loss"].array()
    shell.state = ckpt.arrays["state"].array()
    shell.log = ckpt.arrays["log"].array().reshape(-1, 6)
    return {"tuning": shell.tuning()}


def load_learner(blob: bytes) -> Learner:
    """Rebuild a learner from :func:`dump_learner` bytes."""
    ckpt = msgspec.msgpack.decode(blob, type=_Checkpoint)
    if ckpt.schema != CHECKPOINT_SCHEMA:
        raise StateVersionError(
            f"model checkpoint has schema {ckpt.schema}, this version reads {CHECKPOINT_SCHEMA}"
        )
    if ckpt.kind in _BUILTIN:
        learner = _BUILTIN[ckpt.kind](**ckpt.params)
        learner.set_arrays({name: a.array() for name, a in ckpt.arrays.items()})
        return learner
    if ckpt.river_version != river_version() or ckpt.payload is None:
        raise StateVersionError(
            f"model {ckpt.params.get('class')} was saved by River {ckpt.river_version}, this is "
            f"River {river_version()}: retrain it (liveprofile warm-start) with this version"
        )
    return pickle.loads(ckpt.payload)  # type: ignore[no-any-return]

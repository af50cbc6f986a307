"""A learner checkpoint as the coordinates that changed since the previous one.

A batch of events moves some thousands of a hashed model's coordinates; its checkpoint
(:func:`~liveprofile.learn.registry.dump_learner`) holds all of them, megabytes on a large
model. A store that keeps the last checkpoint it wrote as dense arrays (:func:`unpack`) can
write instead a delta (:func:`diff`): per array, the indices of the coordinates whose bytes
changed and their new values, plus the learner's parameters. Replaying the deltas in order on
the checkpoint they started from (:func:`replay`) gives back the newest checkpoint, byte for
byte. Only checkpoints of the built-in learners (arrays, no pickled payload) have deltas; a
change of layout (another learner kind, array sizes or dtypes) has none (:func:`diff` returns
None) and the store writes the whole checkpoint again.

>>> from liveprofile.learn.linear import FTRLProximal
>>> from liveprofile.learn.registry import dump_learner
>>> model = FTRLProximal(bits=10)
>>> before = dump_learner(model)
>>> model.learn_one({"a": 1.0, "b": 2.0}, True)
>>> after = dump_learner(model)
>>> delta = diff(unpack(before), unpack(after))
>>> len(delta) < len(after) // 10
True
>>> replay(before, [delta]) == after
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.errors import StateVersionError
from liveprofile.learn.registry import CHECKPOINT_SCHEMA, _Array, _Checkpoint

Arrays = dict[str, npt.NDArray[Any]]
#: the version of a delta's layout
DELTA_SCHEMA = 1


class Unpacked(msgspec.Struct):
    """A checkpoint as its learner kind and parameters and its arrays, dense."""

    kind: str
    params: dict[str, Any]
    arrays: Arrays


class _Delta(msgspec.Struct, array_like=True):
    schema: int
    params: dict[str, Any]
    #: array name -> (uint32 indices, their new values in the array's dtype), little-endian
    arrays: dict[str, tuple[bytes, bytes]]


def unpack(blob: bytes) -> Unpacked | None:
    """A checkpoint's arrays, dense (None: not a checkpoint of arrays, e.g. a River model)."""
    try:
        ckpt = msgspec.msgpack.decode(blob, type=_Checkpoint)
    except msgspec.DecodeError:
        return None
    if ckpt.schema != CHECKPOINT_SCHEMA or ckpt.payload is not None or not ckpt.arrays:
        return None
    arrays = {name: np.array(a.array(), copy=True) for name, a in ckpt.arrays.items()}
    return Unpacked(ckpt.kind, ckpt.params, arrays)


def pack(state: Unpacked) -> bytes:
    """The checkpoint bytes of ``state`` (what :func:`~liveprofile.learn.registry.dump_learner`
    gives for a learner holding these arrays)."""
    arrays = {name: _Array.of(a) for name, a in state.arrays.items()}
    return msgspec.msgpack.encode(_Checkpoint(CHECKPOINT_SCHEMA, state.kind, state.params, arrays))


def _changed(old: npt.NDArray[Any], new: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """Indices whose bytes differ (a NaN that stays a NaN is no change)."""
    as_uint = np.dtype(f"<u{old.dtype.itemsize}")
    return np.flatnonzero(old.view(as_uint) != new.view(as_uint))


def diff(old: Unpacked | None, new: Unpacked | None) -> bytes | None:
    """The delta that turns ``old`` into ``new``; None when their layouts differ."""
    if old is None or new is None or old.kind != new.kind or old.arrays.keys() != new.arrays.keys():
        return None
    out: dict[str, tuple[bytes, bytes]] = {}
    for name, a in new.arrays.items():
        b = old.arrays[name]
        if a.dtype != b.dtype or a.shape != b.shape or a.dtype.itemsize not in (1, 2, 4, 8):
            return None
        index = _changed(b, a)
        if len(index):
            values = a[index].astype(a.dtype.newbyteorder("<"), copy=False)
            out[name] = (index.astype("<u4").tobytes(), values.tobytes())
    return msgspec.msgpack.encode(_Delta(DELTA_SCHEMA, new.params, out))


def apply(state: Unpacked, delta: bytes) -> None:
    """Apply one :func:`diff` to ``state`` in place."""
    d = msgspec.msgpack.decode(delta, type=_Delta)
    if d.schema != DELTA_SCHEMA:
        raise StateVersionError(
            f"model delta has schema {d.schema}, this version reads {DELTA_SCHEMA}"
        )
    state.params = d.params
    for name, (index, values) in d.arrays.items():
        a = state.arrays[name]
        a[np.frombuffer(index, "<u4")] = np.frombuffer(values, a.dtype.newbyteorder("<"))


def replay(base: bytes, deltas: Iterable[bytes]) -> bytes:
    """The checkpoint ``base`` with ``deltas`` applied in order."""
    state = unpack(base)
    if state is None:
        raise StateVersionError("model deltas follow a checkpoint that has no arrays")
    for delta in deltas:
        apply(state, delta)
    return pack(state)

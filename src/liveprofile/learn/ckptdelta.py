"""A learner checkpoint as the coordinates that changed since the previous one.

A batch of events moves some thousands of a hashed model's coordinates; its checkpoint
(:func:`~liveprofile.learn.registry.dump_learner`) holds all of them, megabytes on a large
model. A store that keeps the last checkpoint it wrote (:func:`unpack`) can write instead a
delta (:func:`diff`): per array, the indices of the coordinates whose bits changed and their new
values, plus the learner's parameters. It is found without expanding the arrays: a stored
array keeps only its non-zero entries (positions sorted) until it is mostly non-zero, and the
two lists of positions are matched by binary search. Replaying the deltas in order on
the checkpoint they started from (:func:`replay`) gives back the newest checkpoint, byte for
byte. Only checkpoints of the built-in learners (arrays, no pickled payload) have deltas; a
change of layout (another learner kind, array sizes or dtypes) has none (:func:`diff` returns
None) and the store writes the whole checkpoint again.

>>> from liveprofile.learn.linear import FTRLProximal
>>> from liveprofile.learn.registry import dump_learner
>>> model = FTRLProximal(bits=12)
>>> for n in range(300):
...     model.learn_one({f"f{n}": 1.0, f"g{n % 7}": 1.0}, n % 2 == 0)
>>> before = dump_learner(model)
>>> model.learn_one({"f1": 1.0, "new": 2.0}, True)
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

#: the version of a delta's layout
DELTA_SCHEMA = 1


class Unpacked(msgspec.Struct):
    """A checkpoint as its learner kind, parameters and arrays (as stored: dense, or the
    positions and values of their non-zero entries)."""

    kind: str
    params: dict[str, Any]
    arrays: dict[str, _Array]


class _Delta(msgspec.Struct, array_like=True):
    schema: int
    params: dict[str, Any]
    #: array name -> (uint32 indices, their new values in the array's dtype), little-endian
    arrays: dict[str, tuple[bytes, bytes]]


def unpack(blob: bytes) -> Unpacked | None:
    """A checkpoint's parts (None: not a checkpoint of arrays, e.g. a River model)."""
    try:
        ckpt = msgspec.msgpack.decode(blob, type=_Checkpoint)
    except msgspec.DecodeError:
        return None
    if ckpt.schema != CHECKPOINT_SCHEMA or ckpt.payload is not None or not ckpt.arrays:
        return None
    return Unpacked(ckpt.kind, ckpt.params, ckpt.arrays)


def _bits(a: _Array) -> np.dtype[Any] | None:
    """The unsigned integer type as wide as the array's values (None: no such width)."""
    width = np.dtype(a.dtype).itemsize
    return np.dtype(f"<u{width}") if width in (1, 2, 4, 8) else None


def _coords(a: _Array, bits: np.dtype[Any]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """An array's stored coordinates and their values' bits (every coordinate when dense)."""
    values = np.frombuffer(a.values, dtype=bits)
    if a.positions is None:
        return np.arange(a.size, dtype=np.uint32), values
    return np.frombuffer(a.positions, dtype=np.uint32), values


def _changes(old: _Array, new: _Array) -> tuple[bytes, bytes] | None:
    """(indices, values) of the coordinates whose bits differ; None: incomparable arrays."""
    bits = _bits(new)
    if old.dtype != new.dtype or old.size != new.size or bits is None:
        return None
    if old.positions == new.positions:  # the same coordinates stored: compare in place
        before, after = np.frombuffer(old.values, bits), np.frombuffer(new.values, bits)
        moved = np.flatnonzero(before != after)
        index = moved if new.positions is None else np.frombuffer(new.positions, np.uint32)[moved]
        return index.astype("<u4").tobytes(), after[moved].tobytes()
    po, vo = _coords(old, bits)
    pn, vn = _coords(new, bits)
    if len(po) == 0:  # nothing stored before: every stored coordinate is new
        return pn.astype("<u4").tobytes(), vn.tobytes()
    if len(pn) == 0:  # nothing stored now: every coordinate stored before is zero
        return po.astype("<u4").tobytes(), np.zeros(len(po), dtype=bits).tobytes()
    at = np.minimum(np.searchsorted(po, pn), len(po) - 1)
    was = np.where(po[at] == pn, vo[at], 0)
    moved = np.flatnonzero(was != vn)
    back = np.minimum(np.searchsorted(pn, po), len(pn) - 1)
    gone = po[pn[back] != po]  # stored before, zero now
    index = np.concatenate([pn[moved], gone]).astype("<u4")
    values = np.concatenate([vn[moved], np.zeros(len(gone), dtype=bits)])
    return index.tobytes(), values.tobytes()


def diff(old: Unpacked | None, new: Unpacked | None) -> bytes | None:
    """The delta that turns ``old`` into ``new``; None when their layouts differ."""
    if old is None or new is None or old.kind != new.kind or old.arrays.keys() != new.arrays.keys():
        return None
    out: dict[str, tuple[bytes, bytes]] = {}
    for name, a in new.arrays.items():
        changes = _changes(old.arrays[name], a)
        if changes is None:
            return None
        if changes[0]:
            out[name] = changes
    return msgspec.msgpack.encode(_Delta(DELTA_SCHEMA, new.params, out))


def replay(base: bytes, deltas: Iterable[bytes]) -> bytes:
    """The checkpoint ``base`` with ``deltas`` applied in order."""
    state = unpack(base)
    if state is None:
        raise StateVersionError("model deltas follow a checkpoint that has no arrays")
    params = state.params
    dense = {name: np.array(a.array(), copy=True) for name, a in state.arrays.items()}
    for delta in deltas:
        d = msgspec.msgpack.decode(delta, type=_Delta)
        if d.schema != DELTA_SCHEMA:
            raise StateVersionError(
                f"model delta has schema {d.schema}, this version reads {DELTA_SCHEMA}"
            )
        params = d.params
        for name, (index, values) in d.arrays.items():
            a = dense[name]
            a.view(_bits(state.arrays[name]))[np.frombuffer(index, "<u4")] = np.frombuffer(
                values, _bits(state.arrays[name])
            )
    arrays = {name: _Array.of(a) for name, a in dense.items()}
    return msgspec.msgpack.encode(_Checkpoint(CHECKPOINT_SCHEMA, state.kind, params, arrays))

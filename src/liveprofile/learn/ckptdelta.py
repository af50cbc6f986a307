"""A learner checkpoint as the coordinates that changed since the previous one.

A batch of events moves some thousands of a hashed model's coordinates; its checkpoint
(:func:`~liveprofile.learn.registry.dump_learner`) holds all of them, megabytes on a large
model. A store that keeps the last checkpoint it wrote (:func:`unpack`) can write instead a
delta (:func:`diff`): per array, the indices of the coordinates whose bits changed and their new
values, plus the learner's parameters. A stored array keeps only its non-zero entries until it
is mostly non-zero: when their positions did not change, the values are compared in place;
arrays are expanded only when a batch stored new coordinates (the last expansion is kept).
Replaying the deltas in order on the checkpoint they started from (:func:`replay`) gives back
the newest checkpoint, byte for byte. Only checkpoints of the built-in learners (arrays, no
pickled payload) have deltas; a change of layout (another learner kind, array sizes or dtypes)
has none (:func:`diff` returns None) and the store writes the whole checkpoint again.

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
    positions and values of their non-zero entries), and the arrays' bits expanded, once a
    diff needed them (kept for the next diff)."""

    kind: str
    params: dict[str, Any]
    arrays: dict[str, _Array]
    expanded: dict[str, npt.NDArray[Any]] = msgspec.field(default_factory=dict)

    def bits(self, name: str) -> npt.NDArray[Any]:
        """Array ``name``'s values as unsigned integers of their width, every coordinate."""
        found = self.expanded.get(name)
        if found is None:
            a = self.arrays[name]
            width = _bits(a)
            assert width is not None
            values = np.frombuffer(a.values, dtype=width)
            if a.positions is None:
                found = values
            else:
                found = np.zeros(a.size, dtype=width)
                found[np.frombuffer(a.positions, dtype=np.uint32)] = values
            self.expanded[name] = found
        return found


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


def _changes(old: Unpacked, new: Unpacked, name: str) -> tuple[bytes, bytes] | None:
    """(indices, values) of array ``name``'s coordinates whose bits differ; None: the arrays
    cannot be compared."""
    a, b = old.arrays[name], new.arrays[name]
    bits = _bits(b)
    if a.dtype != b.dtype or a.size != b.size or bits is None:
        return None
    if a.positions == b.positions:  # the same coordinates stored: compare in place
        before, after = np.frombuffer(a.values, bits), np.frombuffer(b.values, bits)
        moved = np.flatnonzero(before != after)
        index = moved if b.positions is None else np.frombuffer(b.positions, np.uint32)[moved]
        return index.astype("<u4").tobytes(), after[moved].tobytes()
    after = new.bits(name)
    index = np.flatnonzero(old.bits(name) != after)
    return index.astype("<u4").tobytes(), after[index].tobytes()


def diff(old: Unpacked | None, new: Unpacked | None) -> bytes | None:
    """The delta that turns ``old`` into ``new``; None when their layouts differ."""
    if old is None or new is None or old.kind != new.kind or old.arrays.keys() != new.arrays.keys():
        return None
    out: dict[str, tuple[bytes, bytes]] = {}
    for name in new.arrays:
        changes = _changes(old, new, name)
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

"""An in-memory store for tests and for pipelines that need no persistence.

Like the SQLite and Redis stores it takes a task's model as the coordinates a batch changed
(:mod:`liveprofile.learn.tracked`): it keeps the first whole checkpoint and the deltas after
it, and makes them whole again when the model is read, so a batch costs what it changed
rather than a copy of the whole model.

>>> store = MemoryStore()
>>> store.setup()
>>> store.commit({"profile": {"u1": b"x", "u2": b"y"}}, {"offset": b"2"})
>>> store.read("profile", ["u2", "nobody", "u1"]), store.get_meta("offset")
([b'y', None, b'x'], b'2')
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from liveprofile.errors import StoreError
from liveprofile.store.base import Rows, check_keyset_rows, is_keyset

if TYPE_CHECKING:
    from liveprofile.learn.tracked import ModelUpdate


#: deltas are kept up to their share of the whole checkpoint or of this many bytes, whichever is
#: more: a sparse checkpoint of a young model is small, but making it whole again costs a pass
#: over all its coordinates, however few are set
_ROOM = 1 << 23


class _Deltas:
    """A model written as updates: the deltas after its whole checkpoint (kept in the meta
    blobs), their size, and the update (tracker ``source``, ``number``) written last."""

    __slots__ = ("deltas", "number", "size", "source")

    def __init__(self, source: bytes, number: int) -> None:
        self.source, self.number = source, number
        self.deltas: list[bytes] = []
        self.size = 0


class MemoryStore:
    """Dictionaries behind the :class:`~liveprofile.store.base.Store` interface."""

    #: takes a model as the coordinates a batch changed (:mod:`liveprofile.learn.tracked`)
    writes_model_deltas = True

    def __init__(self) -> None:
        self._staged: dict[str, ModelUpdate] = {}
        self._models: dict[str, _Deltas] = {}
        self._rows: dict[str, dict[str, bytes]] = {}
        self._meta: dict[str, bytes] = {}
        #: the keys of each key-set namespace, sorted (see :meth:`keys_under`)
        self._sorted: dict[str, list[str]] = {}

    def setup(self) -> None:
        return None

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        rows = self._rows.get(namespace, {})
        return [rows.get(k) for k in keys]

    def scan(
        self, namespace: str, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        rows = self._rows.get(namespace, {})
        keys = sorted(k for k in rows if after is None or k > after)
        for key in keys if limit is None else keys[:limit]:
            yield key, rows[key]

    def keys_under(self, namespace: str, prefixes: Sequence[str]) -> list[list[str]]:
        keys = self._sorted.get(namespace)
        if keys is None:  # not a key set: a pass over the namespace
            keys = sorted(self._rows.get(namespace, {}))
        out = []
        for prefix in prefixes:
            start = bisect.bisect_left(keys, prefix)
            end = start
            while end < len(keys) and keys[end].startswith(prefix):
                end += 1
            out.append(keys[start:end])
        return out

    def count(self, namespace: str) -> int:
        return len(self._rows.get(namespace, {}))

    def get_meta(self, name: str) -> bytes | None:
        model = self._models.get(name)
        if model is not None and model.deltas:  # made whole once, for every later read
            from liveprofile.learn.ckptdelta import replay  # numpy: only for model updates

            self._meta[name] = replay(self._meta[name], model.deltas)
            model.deltas, model.size = [], 0
        return self._meta.get(name)

    def stage_model(self, name: str, update: ModelUpdate) -> None:
        """Write a model update as blob ``name`` in the next commit: as a delta when it
        follows the update written last, else whole."""
        self._staged[name] = update

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        staged, self._staged = self._staged, {}
        values = [v for changes in rows.values() for v in changes.values() if v is not None]
        bad = [v for v in (*values, *meta.values()) if not isinstance(v, bytes | bytearray)]
        if bad:
            raise StoreError(f"cannot commit {type(bad[0]).__name__}: values must be bytes")
        check_keyset_rows(rows)
        for namespace, changes in rows.items():
            target = self._rows.setdefault(namespace, {})
            keys = self._sorted.setdefault(namespace, []) if is_keyset(namespace) else None
            for key, value in changes.items():
                if value is None:
                    if target.pop(key, None) is not None and keys is not None:
                        del keys[bisect.bisect_left(keys, key)]
                else:
                    if keys is not None and key not in target:
                        bisect.insort(keys, key)
                    target[key] = bytes(value)
        for name, value in meta.items():
            self._meta[name] = bytes(value)
            self._models.pop(name, None)
        for name, update in staged.items():
            if name not in meta:
                self._write_model(name, update)

    def _write_model(self, name: str, update: ModelUpdate) -> None:
        model = self._models.get(name)
        if model is not None:
            room = max(len(self._meta[name]), _ROOM)
            delta = update.delta_after(model.source, model.number, model.size, room)
            if delta is not None:
                model.deltas.append(delta)
                model.size += len(delta)
                model.number = update.number
                return
        self._meta[name] = update.whole()
        self._models[name] = _Deltas(update.source, update.number)

    def close(self) -> None:
        return None

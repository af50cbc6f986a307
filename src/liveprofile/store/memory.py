"""An in-memory store for tests and for pipelines that need no persistence.

>>> store = MemoryStore()
>>> store.setup()
>>> store.commit({"profile": {"u1": b"x", "u2": b"y"}}, {"offset": b"2"})
>>> store.read("profile", ["u2", "nobody", "u1"]), store.get_meta("offset")
([b'y', None, b'x'], b'2')
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence

from liveprofile.errors import StoreError
from liveprofile.store.base import Rows, check_keyset_rows, is_keyset


class MemoryStore:
    """Dictionaries behind the :class:`~liveprofile.store.base.Store` interface."""

    def __init__(self) -> None:
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
        return self._meta.get(name)

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
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
        self._meta.update((name, bytes(value)) for name, value in meta.items())

    def close(self) -> None:
        return None

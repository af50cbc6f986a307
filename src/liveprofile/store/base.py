"""The store interface: a small key-value contract every backend implements.

Rows live in namespaces (``profile``, ``item``, ``pending``, ``dedup``); named blobs (``meta``)
hold model checkpoints, metrics and the source offset. :meth:`Store.commit` writes a batch of row
changes and blobs atomically: either all of it is visible afterwards or none of it.

A namespace whose name starts with :data:`KEYSET_PREFIX` is a set of keys: its rows have empty
values and are found by the start of their key (:meth:`Store.keys_under`, an index such as
the identity links by target), so a store that hashes its rows keeps such a namespace sorted
(Redis: a sorted set) and answers without reading the namespace whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

from liveprofile.errors import StoreError

#: row changes of one commit: namespace -> key -> new value (None deletes the row)
Rows = Mapping[str, Mapping[str, bytes | None]]

#: namespaces named ``keys:...`` hold keys only (values ``b""``), read by key prefix
KEYSET_PREFIX = "keys:"
#: the meta blobs of learners start with this (``model/TASK``)
MODEL_PREFIX = "model/"
#: a store that keeps a model as a whole checkpoint plus deltas writes it whole again once the
#: deltas since the whole one would add up to more than this fraction of it
DELTA_FRACTION = 0.5


def delta_fits(delta_bytes: int, size: int, delta: bytes) -> bool:
    """Whether ``delta`` keeps the deltas written after a whole checkpoint of ``size`` bytes
    (``delta_bytes`` so far) within :data:`DELTA_FRACTION` of it.

    >>> delta_fits(0, 100, b"x" * 50), delta_fits(10, 100, b"x" * 41)
    (True, False)
    """
    return delta_bytes + len(delta) <= size * DELTA_FRACTION


def is_keyset(namespace: str) -> bool:
    """Whether a namespace is a set of keys (:data:`KEYSET_PREFIX`; a scoped copy too).

    >>> is_keyset("keys:linkto"), is_keyset("keys:linkto@p0"), is_keyset("alias")
    (True, True, False)
    """
    return namespace.startswith(KEYSET_PREFIX)


def check_keyset_rows(rows: Rows) -> None:
    """Refuse a commit that gives a row of a key-set namespace a value other than ``b""``.

    >>> check_keyset_rows({"keys:x": {"a": b"", "b": None}, "alias": {"c": b"u"}})
    >>> check_keyset_rows({"keys:x": {"a": b"u"}})
    Traceback (most recent call last):
    ...
    liveprofile.errors.StoreError: cannot commit row 'a' of key set 'keys:x': its value must be b''
    """
    for namespace, changes in rows.items():
        if is_keyset(namespace):
            for key, value in changes.items():
                if value is not None and value != b"":
                    raise StoreError(
                        f"cannot commit row {key!r} of key set {namespace!r}: its value must be b''"
                    )


def prefix_end(prefix: str) -> str | None:
    """The least string after every string that starts with ``prefix``, in code point order
    (which is UTF-8 byte order), for range queries; None when there is none (no upper bound).

    >>> prefix_end("3:abc:"), prefix_end("a\U0010ffff"), prefix_end("")
    ('3:abc;', 'b', None)
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(0xE000 if last == 0xD7FF else last + 1)
        prefix = prefix[:-1]
    return None


@runtime_checkable
class Store(Protocol):
    """What the pipeline needs from a feature store."""

    def setup(self) -> None:
        """Create what the store needs (tables, schema); safe to call on an existing store."""

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        """Values of ``keys`` in one round trip, in key order (None where absent)."""
        ...

    def scan(
        self, namespace: str, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """Rows of a namespace in key order: every row, or a page of at most ``limit`` rows
        with keys greater than ``after``."""
        ...

    def keys_under(self, namespace: str, prefixes: Sequence[str]) -> list[list[str]]:
        """For each of ``prefixes``, the keys of a namespace that start with it, in key order,
        in one round trip. Meant for key-set namespaces (:data:`KEYSET_PREFIX`), where it costs
        what the keys found cost, not the size of the namespace."""
        ...

    def count(self, namespace: str) -> int: ...

    def get_meta(self, name: str) -> bytes | None: ...

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        """Apply row changes and blobs atomically."""

    def close(self) -> None: ...

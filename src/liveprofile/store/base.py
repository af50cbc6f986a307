"""The store interface: a small key-value contract every backend implements.

Rows live in namespaces (``profile``, ``item``, ``pending``, ``dedup``); named blobs (``meta``)
hold model checkpoints, metrics and the source offset. :meth:`Store.commit` writes a batch of row
changes and blobs atomically: either all of it is visible afterwards or none of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable

#: row changes of one commit: namespace -> key -> new value (None deletes the row)
Rows = Mapping[str, Mapping[str, bytes | None]]

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

    def count(self, namespace: str) -> int: ...

    def get_meta(self, name: str) -> bytes | None: ...

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        """Apply row changes and blobs atomically."""

    def close(self) -> None: ...

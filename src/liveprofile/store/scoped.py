"""A per-worker view of a shared store: some namespaces shared, the rest kept apart.

When several workers share one store, each owning some partitions, profiles are disjoint (a user
lives in one partition) and can share a namespace, while everything a worker keeps for itself
(its models, item statistics, pending examples, de-duplication window, checkpoint) must not
collide: those names get the worker's scope as a suffix. The config and the learned rankers
(:func:`~liveprofile.store.layout.shared_meta`) are shared too: one ranker per task. Commits
stay atomic: the view renames keys and passes one commit through. A commit that carries the
scope's checkpoint also writes it to the shared registry :data:`~liveprofile.store.layout.SCOPES`
(same commit), so a reader finds every scope of a store, and all their checkpoints, in one scan
(:func:`registered_scopes`).

>>> from liveprofile.store.memory import MemoryStore
>>> shared = MemoryStore()
>>> a, b = ScopedStore(shared, "p0"), ScopedStore(shared, "p1")
>>> a.commit({"profile": {"u1": b"x"}, "item": {"i": b"a"}}, {"checkpoint": b"1"})
>>> b.commit({"profile": {"u2": b"y"}, "item": {"i": b"b"}}, {"checkpoint": b"2"})
>>> b.read("profile", ["u1", "u2"]), a.read("item", ["i"]), b.get_meta("checkpoint")
([b'x', b'y'], [b'a'], b'2')
>>> registered_scopes(shared)
{'p0': b'1', 'p1': b'2'}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from liveprofile.store.base import Rows, Store

if TYPE_CHECKING:
    from liveprofile.learn.tracked import ModelUpdate
from liveprofile.store.layout import CHECKPOINT, SCOPES, SHARED_NAMESPACES, shared_meta


class ScopedStore:
    """``store`` as seen by the worker ``scope``."""

    def __init__(self, store: Store, scope: str) -> None:
        if not scope or "@" in scope:
            raise ValueError(f"a scope is a non-empty name without '@', got {scope!r}")
        self.store = store
        self.scope = scope

    def _ns(self, namespace: str) -> str:
        return namespace if namespace in SHARED_NAMESPACES else f"{namespace}@{self.scope}"

    def _meta(self, name: str) -> str:
        return name if shared_meta(name) else f"{name}@{self.scope}"

    def meta_name(self, name: str) -> str:
        """The name blob ``name`` of this view has in the shared store.

        >>> from liveprofile.store.memory import MemoryStore
        >>> ScopedStore(MemoryStore(), "t.0").meta_name("checkpoint")
        'checkpoint@t.0'
        """
        return self._meta(name)

    def setup(self) -> None:
        self.store.setup()

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        return self.store.read(self._ns(namespace), keys)

    def scan(
        self, namespace: str, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        return self.store.scan(self._ns(namespace), after=after, limit=limit)

    def keys_under(self, namespace: str, prefixes: Sequence[str]) -> list[list[str]]:
        return self.store.keys_under(self._ns(namespace), prefixes)

    def count(self, namespace: str) -> int:
        return self.store.count(self._ns(namespace))

    def get_meta(self, name: str) -> bytes | None:
        return self.store.get_meta(self._meta(name))

    @property
    def writes_model_deltas(self) -> bool:
        """Whether the store under this view takes model updates (see ``stage_model``)."""
        return bool(getattr(self.store, "writes_model_deltas", False))

    def stage_model(self, name: str, update: ModelUpdate) -> None:
        """Stage a model update on the store under this view, under the scope's name."""
        self.store.stage_model(self._meta(name), update)  # type: ignore[attr-defined]

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        renamed = {self._ns(ns): changes for ns, changes in rows.items()}
        checkpoint = meta.get(CHECKPOINT)
        if checkpoint is not None:
            renamed[SCOPES] = {**renamed.get(SCOPES, {}), self.scope: checkpoint}
        self.store.commit(renamed, {self._meta(name): value for name, value in meta.items()})

    def close(self) -> None:
        self.store.close()


def registered_scopes(store: Store) -> dict[str, bytes]:
    """Every scope that committed a checkpoint to ``store`` through a :class:`ScopedStore`,
    with that checkpoint as of its latest commit (one scan; empty for an unscoped store)."""
    return dict(store.scan(SCOPES))

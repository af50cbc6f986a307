"""A store kept per partition, read as one: what the read API sees of a Kafka-fed store.

Kafka workers and the Flink job keep each partition's checkpoint, metrics, item statistics,
population histograms and segments under the partition's scope (``{topic}.{p}``, see
:class:`~liveprofile.store.scoped.ScopedStore`); profiles, dead letters, the config and the
shared models are shared. :class:`PartitionedView` finds the scopes in the store's registry
(:func:`~liveprofile.store.scoped.registered_scopes`, written in each partition's own commit)
and answers the read side's calls with the partitions' figures merged: the checkpoint's
counters added up (:func:`~liveprofile.store.layout.merge_checkpoints`), prequential metrics
added bin by bin (:func:`~liveprofile.learn.regression.merged_metrics`, as ``status --kafka``
does), item statistics and popularity added per item
(:func:`~liveprofile.profile.items.merge_items`), RFM histograms added, segment members and
their history put together. A store written by one pipeline (an unscoped checkpoint) is passed
through untouched, so the dashboard, ``/v1/stats``, ``/metrics``, the timeline and
recommendations read either kind of store the same way.

>>> from liveprofile.store.memory import MemoryStore
>>> from liveprofile.store.layout import Checkpoint, encode_checkpoint, read_checkpoint
>>> store = MemoryStore()
>>> for scope, events in [("shop.0", 3), ("shop.1", 4)]:
...     ScopedStore(store, scope).commit(
...         {"item": {"i1": encode_item(ItemStats(anchor=0.0, n=events))}},
...         {CHECKPOINT: encode_checkpoint(Checkpoint(seq=1, events=events))})
>>> view = PartitionedView(store)
>>> view.scopes(), read_checkpoint(view).events, decode_item(view.read("item", ["i1"])[0]).n
(['shop.0', 'shop.1'], 7, 7)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import msgspec

from liveprofile.errors import StoreError
from liveprofile.learn.regression import merged_metrics
from liveprofile.profile.items import ItemStats, decode_item, encode_item, merge_items
from liveprofile.profile.population import Population
from liveprofile.store.base import Rows, Store
from liveprofile.store.layout import (
    CHECKPOINT,
    ITEMS,
    POPULATION,
    SEGMENT_HISTORY,
    SHARED_NAMESPACES,
    decode_checkpoint,
    encode_checkpoint,
    merge_checkpoints,
    model_namespace,
    shared_meta,
    stored_config,
)
from liveprofile.store.scoped import ScopedStore, registered_scopes

SegmentHistory = list[tuple[float, dict[str, int]]]


def shared_namespace(namespace: str) -> bool:
    """Whether a namespace is one for all partitions: profiles, dead letters, the registry,
    and the rows of the shared models (written unscoped by every worker).

    >>> [shared_namespace(ns) for ns in ("profile", model_namespace("convert"), "item")]
    [True, True, False]
    """
    return namespace in SHARED_NAMESPACES or namespace.startswith(model_namespace(""))


def merge_segment_history(histories: Sequence[SegmentHistory]) -> SegmentHistory:
    """Per-partition segment sizes over time as the store's: at every time any partition
    recorded, the sum of each partition's latest sizes (a partition counts nothing before
    its first record).

    >>> merge_segment_history([[(1.0, {"vip": 2}), (3.0, {"vip": 1})], [(2.0, {"vip": 5})]])
    [(1.0, {'vip': 2}), (2.0, {'vip': 7}), (3.0, {'vip': 6})]
    """
    steps = sorted({ts for history in histories for ts, _ in history})
    latest: list[dict[str, int]] = [{} for _ in histories]
    cursor = [0] * len(histories)
    out: SegmentHistory = []
    for ts in steps:
        for k, history in enumerate(histories):
            while cursor[k] < len(history) and history[cursor[k]][0] <= ts:
                latest[k] = history[cursor[k]][1]
                cursor[k] += 1
        sizes: dict[str, int] = {}
        for part in latest:
            for segment, n in part.items():
                sizes[segment] = sizes.get(segment, 0) + n
        out.append((ts, sizes))
    return out


class PartitionedView:
    """``store`` read as one store over all the partition scopes in its registry (read-only).

    Whether the store is partitioned is decided once it has data: an unscoped checkpoint means
    one pipeline wrote it (every call passes through), registered scopes mean partitions. The
    merged checkpoint is rebuilt when the registry changes (one scan of it per call); merged
    metrics, population and segment history when the merged checkpoint does.
    """

    def __init__(self, store: Store) -> None:
        self.base = store
        #: None until the store has data; then whether it is kept per partition
        self._partitioned: bool | None = None
        self._registry: tuple[dict[str, bytes], bytes] = ({}, b"")
        self._merged: dict[str, tuple[bytes, bytes | None]] = {}
        self._half_life: float | None = None

    # -- which scopes ---------------------------------------------------------------------------

    def partitioned(self) -> bool:
        """Whether the store is kept per partition (False also for a store without data yet)."""
        if self._partitioned is None:
            if self.base.get_meta(CHECKPOINT) is not None:
                self._partitioned = False
            elif registered_scopes(self.base):
                self._partitioned = True
        return bool(self._partitioned)

    def scopes(self) -> list[str]:
        """The partition scopes in the store's registry, in name order."""
        return sorted(registered_scopes(self.base)) if self.partitioned() else []

    def _views(self) -> list[ScopedStore]:
        return [ScopedStore(self.base, scope) for scope in self.scopes()]

    def _checkpoint(self) -> bytes:
        registry = registered_scopes(self.base)
        if registry != self._registry[0]:
            merged = merge_checkpoints(decode_checkpoint(b) for _, b in sorted(registry.items()))
            self._registry = (registry, encode_checkpoint(merged))
        return self._registry[1]

    def _cached(self, name: str, build: Callable[[], bytes | None]) -> bytes | None:
        """A merged blob, built again only when the merged checkpoint moved."""
        version = self._checkpoint()
        cached = self._merged.get(name)
        if cached is None or cached[0] != version:
            cached = self._merged[name] = (version, build())
        return cached[1]

    @property
    def half_life(self) -> float:
        """The counters' half-life, which item popularity decays with (from the config)."""
        if self._half_life is None:
            self._half_life = stored_config(self.base).profile.counters_half_life_s
        return self._half_life

    # -- the Store protocol ---------------------------------------------------------------------

    def setup(self) -> None:
        self.base.setup()

    def get_meta(self, name: str) -> bytes | None:
        if shared_meta(name) or not self.partitioned():
            return self.base.get_meta(name)
        if name == CHECKPOINT:
            return self._checkpoint()
        if name.startswith("metrics/"):
            return self._cached(name, lambda: self._metrics(name))
        if name == POPULATION:
            return self._cached(name, self._population)
        if name == SEGMENT_HISTORY:
            return self._cached(name, self._segment_history)
        return self.base.get_meta(name)  # e.g. a shared model's header

    def _blobs(self, name: str) -> list[bytes]:
        return [b for b in (v.get_meta(name) for v in self._views()) if b is not None]

    def _metrics(self, name: str) -> bytes | None:
        merged = merged_metrics(self._blobs(name))
        return None if merged is None else merged.to_bytes()

    def _population(self) -> bytes | None:
        blobs = self._blobs(POPULATION)
        if not blobs:
            return None
        total = Population()
        for blob in blobs:
            total.add(msgspec.msgpack.decode(blob, type=Population))
        return msgspec.msgpack.encode(total)

    def _segment_history(self) -> bytes | None:
        blobs = self._blobs(SEGMENT_HISTORY)
        if not blobs:
            return None
        histories = [msgspec.msgpack.decode(b, type=SegmentHistory) for b in blobs]
        return msgspec.msgpack.encode(merge_segment_history(histories))

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if shared_namespace(namespace) or not self.partitioned():
            return self.base.read(namespace, keys)
        parts = [v.read(namespace, keys) for v in self._views()]
        out: list[bytes | None] = []
        for k, key in enumerate(keys):
            found = [p[k] for p in parts if p[k] is not None]
            if namespace == ITEMS and len(found) > 1:
                out.append(self._merge_items(key, [b for b in found if b is not None]))
            else:
                out.append(found[0] if found else None)
        return out

    def _merge_items(self, key: str, blobs: list[bytes]) -> bytes:
        parts: list[ItemStats] = [decode_item(b, key) for b in blobs]
        return encode_item(merge_items(parts, self.half_life))

    def scan(
        self, namespace: str, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        if shared_namespace(namespace) or not self.partitioned():
            yield from self.base.scan(namespace, after=after, limit=limit)
            return
        rows: dict[str, list[bytes]] = {}
        for view in self._views():
            for key, blob in view.scan(namespace):
                if after is None or key > after:
                    rows.setdefault(key, []).append(blob)
        keys = sorted(rows)
        for key in keys if limit is None else keys[: max(limit, 0)]:
            found = rows[key]
            if namespace == ITEMS and len(found) > 1:
                yield key, self._merge_items(key, found)
            else:
                yield key, found[0]

    def keys_under(self, namespace: str, prefixes: Sequence[str]) -> list[list[str]]:
        """The keys under each prefix in every partition, merged in key order."""
        if shared_namespace(namespace) or not self.partitioned():
            return self.base.keys_under(namespace, prefixes)
        parts = [v.keys_under(namespace, prefixes) for v in self._views()]
        return [sorted({k for p in parts for k in p[i]}) for i in range(len(prefixes))]

    def count(self, namespace: str) -> int:
        if shared_namespace(namespace) or not self.partitioned():
            return self.base.count(namespace)
        if namespace == ITEMS:  # an item seen in several partitions counts once
            return sum(1 for _ in self.scan(namespace))
        return sum(v.count(namespace) for v in self._views())

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        """Pass a commit through to a store of one pipeline; of a store kept per partition,
        only blobs shared by all partitions (a learned ranker), which the workers never write.
        """
        if self.partitioned() and (rows or not all(shared_meta(name) for name in meta)):
            raise StoreError("a store kept per partition is written by its workers, not here")
        self.base.commit(rows, meta)

    def close(self) -> None:
        self.base.close()

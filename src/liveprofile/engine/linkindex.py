"""The identity links by target, kept in step with the links and read instead of a scan.

Every row ``source -> target`` of the link namespace (:data:`~liveprofile.store.layout.ALIASES`)
has the key ``link_index_key(target, source)`` in the key set
:data:`~liveprofile.store.layout.LINKS_BY_TARGET`, written in the same commit. To keep it so,
:class:`LinkIndex` remembers the stored link of every id the state read or wrote: a change of
a link then deletes the key under the old target and adds the one under the new, with no read.

The links that lead to some ids (:func:`find_links_to`) are the keys under their prefixes, one
read per step of a chain of links, each checked against the link namespace; a key whose link
no longer leads there (left by a change whose old target was not known) is ignored and
deleted in the next commit. A store written before the index (state schema 1) is indexed by
the first batch that needs it: that batch scans the links, as every such batch did before,
and its commit writes their keys and raises the schema
(:func:`~liveprofile.store.layout.links_indexed`).

>>> from liveprofile.store.memory import MemoryStore
>>> from liveprofile.store.layout import ALIASES, LINKS_BY_TARGET
>>> index = LinkIndex()
>>> index.stored.update({"v1": None, "v2": None})
>>> links = {"v1": "u1", "v2": "v1"}
>>> rows = {ALIASES: {a: u.encode() for a, u in links.items()}, LINKS_BY_TARGET: index.rows(links)}
>>> sorted(rows[LINKS_BY_TARGET])
['2:u1:v1', '2:v1:v2']
>>> store = MemoryStore()
>>> store.commit(rows, {})
>>> sorted(find_links_to(store, {"u1"}, index).items())
[('v1', 'u1'), ('v2', 'v1')]
>>> index.rows({"v2": "u2"})
{'2:v1:v2': None, '2:u2:v2': b''}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from liveprofile.store.base import Store
from liveprofile.store.layout import (
    ALIASES,
    LINKS_BY_TARGET,
    link_index_key,
    link_index_prefix,
    link_index_source,
)


class LinkMap(dict[str, str]):
    """The identity links a state holds (id -> the id it is linked to), a ``dict`` that also
    knows the ids linked to each id (:meth:`sources_of`), so removing or re-pointing the links
    to an id costs the links found, not a pass over all the links held.

    >>> links = LinkMap({"v1": "u1", "v2": "u1"})
    >>> links["v2"] = "u2"
    >>> del links["v1"]
    >>> links.update(v3="u2")
    >>> links, sorted(links.sources_of("u2")), links.sources_of("u1"), links.pop("v9", None)
    ({'v2': 'u2', 'v3': 'u2'}, ['v2', 'v3'], set(), None)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        #: target -> its one source, or the set of them (most ids have one: no set for it)
        self._to: dict[str, str | set[str]] = {}
        self.update(*args, **kwargs)

    def sources_of(self, target: str) -> set[str]:
        """The ids linked to ``target`` (a copy)."""
        sources = self._to.get(target)
        if sources is None:
            return set()
        return {sources} if isinstance(sources, str) else set(sources)

    def _forget(self, source: str, target: str) -> None:
        sources = self._to[target]
        if isinstance(sources, str) or len(sources) == 1:
            del self._to[target]
            return
        sources.discard(source)
        if len(sources) == 1:
            self._to[target] = next(iter(sources))

    def __setitem__(self, source: str, target: str) -> None:
        old = dict.get(self, source)
        if old is not None:
            self._forget(source, old)
        dict.__setitem__(self, source, target)
        sources = self._to.get(target)
        if sources is None:
            self._to[target] = source
        elif isinstance(sources, str):
            self._to[target] = {sources, source}
        else:
            sources.add(source)

    def __delitem__(self, source: str) -> None:
        self._forget(source, dict.pop(self, source))

    def pop(self, source: str, *default: Any) -> Any:
        if source in self:
            target = dict.pop(self, source)
            self._forget(source, target)
            return target
        if default:
            return default[0]
        raise KeyError(source)

    def popitem(self) -> tuple[str, str]:
        source, target = dict.popitem(self)
        self._forget(source, target)
        return source, target

    def setdefault(self, source: str, target: str) -> str:
        if source not in self:
            self[source] = target
        return dict.__getitem__(self, source)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for source, target in dict(*args, **kwargs).items():
            self[source] = target

    def __ior__(self, other: Any) -> LinkMap:  # type: ignore[override,misc]
        self.update(other)
        return self

    def clear(self) -> None:
        dict.clear(self)
        self._to.clear()


class LinkIndex:
    """What a pipeline state knows of its stored links, to index them by target."""

    def __init__(self) -> None:
        #: the stored link of each id read or committed (None: none); an id not here is unknown
        self.stored: dict[str, str | None] = {}
        #: keys to write or delete in the next commit besides the batch's changes: a first
        #: build of the index, keys found stale
        self.pending: dict[str, bytes | None] = {}
        #: the next commit completes the index of a store written before it
        self.built = False

    def rows(self, links: Mapping[str, str | None]) -> dict[str, bytes | None]:
        """The index's row changes for a batch that changed ``links`` (id -> new target, None:
        removed), and the pending ones; the ids' stored links are then the new ones."""
        out, self.pending = self.pending, {}
        stored = self.stored
        for source, target in links.items():
            old = stored.get(source)
            if old is not None and old != target:
                out[link_index_key(old, source)] = None
            if target is not None:
                out[link_index_key(target, source)] = b""
            stored[source] = target
        return out

    def build(self, links: Iterable[tuple[str, bytes]]) -> None:
        """Index every link of a store written before the index (its rows, as scanned), in
        the next commit."""
        for source, target in links:
            self.pending[link_index_key(target.decode(errors="replace"), source)] = b""
        self.built = True

    def stale(self, target: str, source: str) -> None:
        """Delete in the next commit a key whose link no longer leads to ``target``."""
        self.pending.setdefault(link_index_key(target, source), None)


def find_links_to(store: Store, ids: set[str], index: LinkIndex) -> dict[str, str]:
    """The stored links that lead to ``ids``, directly or through other linked ids, as
    ``{source: target}``: the index's keys under the ids, checked against the links (one read
    of each, per step of a chain; a chain is one step but for links made before a ``$merge``
    re-pointed them)."""
    found: dict[str, str] = {}
    targets = sorted(ids)
    while targets:
        prefixes = [link_index_prefix(t) for t in targets]
        candidates: dict[str, list[str]] = {}
        for target, prefix, keys in zip(
            targets, prefixes, store.keys_under(LINKS_BY_TARGET, prefixes), strict=True
        ):
            for key in keys:
                source = link_index_source(prefix, key)
                if source not in found:
                    candidates.setdefault(source, []).append(target)
        names = list(candidates)
        targets = []
        for source, value in zip(names, store.read(ALIASES, names), strict=True):
            for target in candidates[source]:
                if value == target.encode():
                    found[source] = target
                    targets.append(source)
                else:  # its link was changed or removed since
                    index.stale(target, source)
    return found

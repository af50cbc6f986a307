"""Feature stores behind one small interface (``base``): ``memory``, ``sqlite`` (the embedded
default) and Redis (:mod:`liveprofile.redis.store`), plus ``scoped`` (a per-worker view of a
shared store). What a pipeline keeps in a store, and under which names, is ``layout``;
``codec`` is the versioned encoding of stored blobs. The same conformance suite
(:mod:`liveprofile.checks.store`) runs over every backend."""

from __future__ import annotations

from liveprofile.errors import StoreError
from liveprofile.store.base import Store
from liveprofile.store.memory import MemoryStore
from liveprofile.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store", "open_store"]


#: the URL schemes of a Redis store
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_store(url: str, *, read_only: bool = False) -> Store:
    """A store from a URL: ``memory://``, ``sqlite:///path.db`` or a plain file path.

    >>> type(open_store("memory://")).__name__
    'MemoryStore'
    """
    if url == "memory://":
        return MemoryStore()
    if url.startswith(REDIS_SCHEMES):
        from liveprofile.redis.store import RedisStore

        return RedisStore(url)
    if url.startswith("sqlite://"):
        return SQLiteStore(url.removeprefix("sqlite://"), read_only=read_only)
    if "://" in url:
        raise StoreError(
            f"unknown store {url!r}: use a file path, sqlite:///path, redis://host:port/db "
            "or memory://"
        )
    return SQLiteStore(url, read_only=read_only)

"""One writer per store: a second runner on the same store is refused with a clear message.

Two runners committing to one store would interleave checkpoints and lose offsets. Every runner
takes the store's writer lock before its first commit and holds it until it closes:

- SQLite: an exclusive ``flock`` on ``<store>.writer.lock`` (the file names the holder's pid);
  the operating system releases it when the process ends, even on ``kill -9``.
- Redis: a lease key ``{prefix}:writer[:scope]`` (``RedisStore.writer_lease``,
  :mod:`liveprofile.redis.lease`); this module imports nothing of Redis.
- Memory stores belong to one process: no lock.

>>> import tempfile, pathlib
>>> from liveprofile.store.sqlite import SQLiteStore
>>> path = pathlib.Path(tempfile.mkdtemp()) / "p.db"
>>> first = writer_lock(SQLiteStore(path), "replay")
>>> writer_lock(SQLiteStore(path), "replay")
Traceback (most recent call last):
...
liveprofile.errors.StoreLocked: ... is being written by another process (pid ...); ...
>>> first.release()
>>> writer_lock(SQLiteStore(path), "replay").release()
"""

from __future__ import annotations

import fcntl
import os
from typing import IO, Protocol, cast

from liveprofile.errors import StoreLocked
from liveprofile.store.base import Store
from liveprofile.store.scoped import ScopedStore
from liveprofile.store.sqlite import SQLiteStore

#: how long a Redis lease outlives its holder's last renewal
LEASE_S = 15.0


class WriterLock(Protocol):
    """A held writer lock."""

    @property
    def lost(self) -> bool:
        """Whether the lock was taken from this holder (a Redis lease that expired)."""
        ...

    def release(self) -> None: ...


class _NoLock:
    lost = False

    def release(self) -> None:
        pass


def writer_lock(store: Store, owner: str, *, lease_s: float = LEASE_S) -> WriterLock:
    """Take the writer lock of ``store`` for ``owner`` (e.g. a worker's consumer name), or
    raise :class:`StoreLocked` naming the holder."""
    scope = None
    if isinstance(store, ScopedStore):
        scope, store = store.scope, store.store
    if isinstance(store, SQLiteStore):
        return _FileLock(store.path.with_name(store.path.name + ".writer.lock"))
    lease = getattr(store, "writer_lease", None)  # a Redis store's (liveprofile.redis)
    if lease is not None:
        return cast(WriterLock, lease(scope, owner, lease_s))
    return _NoLock()


class _FileLock:
    lost = False

    def __init__(self, path: os.PathLike[str]) -> None:
        self.path = path
        self._fh: IO[str] | None = open(path, "a+")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown"
            self._fh.close()
            self._fh = None
            raise StoreLocked(
                f"{path} is being written by another process (pid {holder}); a second writer "
                "on one store is refused: wait for it to finish, or use another --store"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file releases the lock
            self._fh = None

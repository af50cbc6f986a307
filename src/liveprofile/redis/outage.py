"""Riding out a Redis store that cannot be reached for a while.

A runner whose store is down logs it, waits (exponential backoff, capped) and tries again; what
it held in memory for the state it was committing is dropped and loaded again from the store
once it answers, since the batch in flight may or may not have committed, and a server that
restarted without durable writes (``appendfsync everysec``) may have lost its last commits.
Work that only reads the store (a ranker round's candidates, another partition's checkpoint)
reads it through a :class:`PatientStore`, whose reads wait the outage out and are tried again.

>>> waits = []
>>> outage = StoreOutage("redis://127.0.0.1:1/0", max_backoff_s=0.4, sleep=waits.append)
>>> [outage.waited(ConnectionError("refused")) for _ in range(2)], outage.waited(KeyError("x"))
([False, False], False)
>>> import redis
>>> [outage.waited(redis.ConnectionError("refused")) for _ in range(4)]
[True, True, True, True]
>>> waits
[0.1, 0.2, 0.4, 0.4]
>>> outage.over(); outage.backoff
0.0
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TypeVar

import redis

from liveprofile.errors import StoreError
from liveprofile.store.base import Rows, Store

T = TypeVar("T")

log = logging.getLogger("liveprofile")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means Redis could not be reached (rather than a bug or bad data).

    >>> unreachable(redis.TimeoutError("timed out")), unreachable(ValueError("bad"))
    (True, False)
    """
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True
    if isinstance(exc, StoreError):
        cause = exc.__cause__ or exc.__context__
        return isinstance(cause, redis.ConnectionError | redis.TimeoutError)
    return False


def short(exc: BaseException) -> str:
    """An error as one short line for the log."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


class StoreOutage:
    """The backoff of a runner whose store at ``url`` cannot be reached (see the module)."""

    def __init__(
        self,
        url: str,
        *,
        max_backoff_s: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        self.max_backoff_s = max_backoff_s
        self.backoff = 0.0
        self._sleep = sleep

    def waited(self, exc: BaseException) -> bool:
        """If ``exc`` means the store is unreachable: log it, wait the next backoff and
        return True (the caller drops its state and tries again); else False."""
        if not unreachable(exc):
            return False
        self.backoff = min(self.max_backoff_s, self.backoff * 2 if self.backoff else 0.1)
        log.warning(
            "redis unreachable at %s (%s); retrying in %.1f s", self.url, short(exc), self.backoff
        )
        self._sleep(self.backoff)
        return True

    def over(self) -> None:
        """The store answered again: the next outage starts with a short wait."""
        self.backoff = 0.0


class PatientStore:
    """``store`` whose reads wait out an outage (``outage``'s backoff) and are tried again,
    as often as it takes; a read that succeeds ends the outage. Commits are not retried (one
    may have landed before its reply was lost): they go to ``store`` as they are."""

    def __init__(self, store: Store, outage: StoreOutage) -> None:
        self.store = store
        self.outage = outage

    def retried(self, call: Callable[[], T]) -> T:
        """``call()``, tried again after each backoff while the store cannot be reached."""
        while True:
            try:
                out = call()
            except Exception as exc:
                if not self.outage.waited(exc):
                    raise
                continue
            self.outage.over()
            return out

    def setup(self) -> None:
        self.retried(self.store.setup)

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        return self.retried(lambda: self.store.read(namespace, keys))

    def scan(
        self, namespace: str, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """The rows as one read (a scan cut by the outage starts again)."""
        return iter(
            self.retried(lambda: list(self.store.scan(namespace, after=after, limit=limit)))
        )

    def keys_under(self, namespace: str, prefixes: Sequence[str]) -> list[list[str]]:
        return self.retried(lambda: self.store.keys_under(namespace, prefixes))

    def count(self, namespace: str) -> int:
        return self.retried(lambda: self.store.count(namespace))

    def get_meta(self, name: str) -> bytes | None:
        return self.retried(lambda: self.store.get_meta(name))

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        self.store.commit(rows, meta)

    def close(self) -> None:
        self.store.close()

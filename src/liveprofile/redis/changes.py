"""The Redis workers' stream of segment changes.

Each change is a stream entry with the fields of a line of the embedded runner's change file
(:mod:`liveprofile.engine.changes`): ``segment``, ``user_id``, ``change`` (``enter`` or
``exit``) and ``ts``. The changes are appended inside the commit's ``MULTI``/``EXEC``, each
with a ``key`` that a batch applied again after Redis lost its commit makes again, so that a
reader drops what it read already (:mod:`liveprofile.redis.entrykey`).

>>> change_stream("shop")
'shop:segment-changes'
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any, cast

import redis

from liveprofile.profile.segments import SegmentChange
from liveprofile.redis.entrykey import FIRST_FIELD, KEY_FIELD
from liveprofile.redis.store import RedisStore

#: most changes kept in a Redis change stream (approximate trimming)
STREAM_MAXLEN = 1_000_000


def change_stream(prefix: str) -> str:
    """The Redis stream of a deployment's segment changes."""
    return f"{prefix}:segment-changes"


def stage_changes(
    store: RedisStore,
    stream: str,
    changes: Sequence[SegmentChange],
    keys: Sequence[str],
    first: str,
) -> None:
    """Append ``changes`` to ``stream`` as part of the store's next commit, each with its
    de-duplication key and its batch's first entry id ``first``
    (:mod:`liveprofile.redis.entrykey`)."""
    for c, key in zip(changes, keys, strict=True):
        fields = {"segment": c.segment, "user_id": c.user_id, "change": c.change, "ts": repr(c.ts)}
        store.stage_append(
            stream, {**fields, KEY_FIELD: key, FIRST_FIELD: first}, maxlen=STREAM_MAXLEN
        )


def stage_scrub(store: RedisStore, stream: str, users: Collection[str]) -> None:
    """Delete every change about ``users`` from ``stream`` with the store's next commit (the
    stream is read through once to find them)."""
    ids = [i for i, c in read_stream_changes(store.client, stream) if c["user_id"] in users]
    store.stage_remove(stream, ids)


def read_stream_changes(
    client: redis.Redis, stream: str, *, user: str | None = None, count: int = 1000
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Entries of a change stream, oldest first: (entry id, change), optionally of one user."""
    start = "-"
    while True:
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], client.xrange(stream, start, "+", count)
        )
        for entry_id, fields in entries:
            change: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
            change["ts"] = float(change["ts"])
            if user is None or change["user_id"] == user:
                yield entry_id.decode(), change
        if len(entries) < count:
            return
        start = "(" + entries[-1][0].decode()

"""A Redis store whose commits are fenced per partition: a stale owner cannot commit.

When a partition moves from worker A to worker B, B loads the partition's state and goes on;
should A still commit a batch of that partition afterwards (A stalled past the group's session
timeout and was expelled without noticing), that batch would be applied twice. Each partition
therefore has a fence key, ``{prefix}:fence:{scope}``, holding the checkpoint sequence of its
last commit. A commit names the sequence its state continued from; it ``WATCH``es the fence,
checks it and bumps it inside the same ``MULTI``/``EXEC`` as the rows, so exactly one of two
owners that loaded the same state can commit, and the other learns it is stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import redis

from liveprofile.errors import StoreError
from liveprofile.redis.store import RedisStore
from liveprofile.store.base import Rows


class FencedOut(StoreError):
    """Another owner committed this partition since this worker loaded it."""


class FencedRedisStore(RedisStore):
    """:class:`RedisStore` whose :meth:`commit` checks and advances :attr:`fence` when set.

    ``fence`` is ``(scope, sequence the state continued from)``; None commits unfenced (setup).
    """

    fence: tuple[str, int] | None = None

    def fence_key(self, scope: str) -> str:
        return f"{self.prefix}:fence:{scope}"

    def fence_value(self, scope: str) -> int:
        """The checkpoint sequence of the partition's last commit (0 before any)."""
        with self._errors("read"):
            value = self.client.get(self.fence_key(scope))
        return 0 if value is None else int(cast(Any, value))

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        if self.fence is None:
            super().commit(rows, meta)
            return
        scope, expected = self.fence
        key = self.fence_key(scope)
        appends, self._appends = self._appends, []
        removals, self._removals = self._removals, []
        with self._errors("commit"), self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                current = pipe.get(key)
                if (0 if current is None else int(cast(Any, current))) != expected:
                    raise FencedOut(f"partition state {scope} was committed by another worker")
                pipe.multi()
                for stream, ids in removals:
                    pipe.xdel(stream, *ids)
                for stream, fields, maxlen in appends:
                    pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
                for namespace, changes in rows.items():
                    upserts = {k: v for k, v in changes.items() if v is not None}
                    deletes = [k for k, v in changes.items() if v is None]
                    if upserts:
                        pipe.hset(self._key(namespace), mapping=cast(Any, upserts))
                    if deletes:
                        pipe.hdel(self._key(namespace), *deletes)
                if meta:
                    pipe.hset(self._key("meta"), mapping=cast(Any, dict(meta)))
                pipe.set(key, expected + 1)
                pipe.execute()
            except redis.WatchError:
                raise FencedOut(
                    f"partition state {scope} was committed by another worker"
                ) from None

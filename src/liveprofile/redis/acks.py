"""Acknowledging stream entries only while the store still holds the commit that applied them.

A worker acknowledges (``XACK``) the entries of a batch in the batch's own commit
(:meth:`~liveprofile.redis.store.RedisStore.stage_ack`): both survive a crash of the server or
neither does. Entries read again after a restart of the worker, at or below the committed
offset, were applied by an earlier commit and are only acknowledged. That is right only if the
store still holds that commit: a Redis without durable writes (``appendfsync everysec``) that
crashed and restarted may have lost it while the worker, reconnected, still believes it made it.
:func:`ack_if_committed` therefore acknowledges in one script that first compares the scope's
checkpoint with the one the worker read (and found to be its own): a store that went back in
time meanwhile acknowledges nothing, and the worker reloads its state from it.

>>> meta_field(None), meta_field("p0")
('checkpoint', 'checkpoint@p0')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis

from liveprofile.store.layout import CHECKPOINT

#: KEYS[1]: the store's meta hash, KEYS[2]: the stream; ARGV: the checkpoint's field, the
#: checkpoint expected, the consumer group, then the entry ids. Returns the entries
#: acknowledged, or -1 (nothing acknowledged) when the checkpoint is not the one expected.
ACK_IF_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return -1 end
local acked = 0
for i = 4, #ARGV, 500 do
  acked = acked + redis.call('XACK', KEYS[2], ARGV[3], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
return acked
"""


def meta_field(scope: str | None) -> str:
    """The field of the store's meta hash that holds the checkpoint of ``scope`` (as
    :class:`~liveprofile.store.scoped.ScopedStore` names it)."""
    return CHECKPOINT if scope is None else f"{CHECKPOINT}@{scope}"


def ack_if_committed(
    client: redis.Redis,
    meta_key: str,
    scope: str | None,
    checkpoint: bytes,
    stream: str,
    group: str,
    ids: Sequence[bytes],
) -> bool:
    """Acknowledge ``ids`` of ``stream`` for ``group`` if the checkpoint of ``scope`` in the
    hash ``meta_key`` is still ``checkpoint``, in one step on the server; whether it was."""
    if not ids:
        return True
    args: list[Any] = [meta_field(scope), checkpoint, group, *ids]
    done = client.eval(ACK_IF_SCRIPT, 2, meta_key, stream, *args)
    return int(cast(Any, done)) >= 0

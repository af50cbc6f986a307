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

:func:`align_fence` starts a scope's fence at the checkpoint a worker loaded, under the same
condition, for the workers whose fence nothing else sets up (those without a shared model).

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

#: KEYS[1]: the store's meta hash, KEYS[2]: the scope's fence; ARGV: the checkpoint's field, the
#: checkpoint expected ('' for none), its sequence. Sets the fence to the sequence if the
#: checkpoint is still the one expected (and the fence elsewhere: a commit watching it goes on);
#: returns 1 if it was, else 0 (nothing set).
ALIGN_SCRIPT = """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[3] then redis.call('SET', KEYS[2], ARGV[3]) end
return 1
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


def align_fence(
    client: redis.Redis,
    meta_key: str,
    scope: str | None,
    checkpoint: bytes | None,
    fence_key: str,
    seq: int,
) -> bool:
    """Set the fence ``fence_key`` to ``seq`` if the checkpoint of ``scope`` is still
    ``checkpoint`` (None: none committed), in one step; whether it was.

    The fence of a worker that keeps its model to itself starts where its checkpoint is when it
    loads its state: a store written before fences (or by an unfenced writer, such as a replay)
    has none, or one behind. Commits on a state loaded earlier expect the fence where that state
    was, so at most one commit follows each checkpoint."""
    args: list[Any] = [meta_field(scope), checkpoint or b"", seq]
    return bool(cast(Any, client.eval(ALIGN_SCRIPT, 2, meta_key, fence_key, *args)))

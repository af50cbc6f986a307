"""Privacy on a Redis deployment (:mod:`liveprofile.privacy`): erasures queued to the users'
partition streams, and the segment changes read from the change stream."""

from __future__ import annotations

import math
from typing import Any

import redis

from liveprofile.errors import StoreError
from liveprofile.events.schema import encode_event, forget_event
from liveprofile.redis.changes import change_stream, read_stream_changes
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import COMMAND_FIELD, partition_of, publish, stream_key
from liveprofile.store.base import Store
from liveprofile.store.layout import read_checkpoint


def stream_changes(store: Store) -> list[dict[str, Any]]:
    """Every segment change in the change stream of the Redis store ``store``, oldest first."""
    assert isinstance(store, RedisStore)
    return [c for _, c in read_stream_changes(store.client, change_stream(store.prefix))]


def queue_erasure(url: str, users: list[str], partitions: int | None) -> dict[str, Any]:
    """Append a ``$forget`` of each of ``users`` to its partition stream of the Redis store
    at ``url`` (``partitions``: how many there are; None counts the streams), for the worker
    to apply in order with the users' events."""
    store = RedisStore(url)
    try:
        client = store.client
        if partitions is None:
            partitions = len(list(client.scan_iter(match=f"{store.prefix}:events:*")))
        if partitions < 1:
            raise StoreError(
                f"no event streams under prefix {store.prefix!r}: give the number of partitions"
            )
        watermark = read_checkpoint(store).watermark
        ts = watermark if math.isfinite(watermark) else 0.0
        lines = [encode_event(forget_event(u, ts)) for u in users]
        publish(client, store.prefix, partitions, lines, field=COMMAND_FIELD)
        streams = sorted({stream_key(store.prefix, partition_of(u, partitions)) for u in users})
    except redis.RedisError as exc:
        raise StoreError(f"cannot queue the erasure at {store.url}: {exc}") from None
    finally:
        store.close()
    return {"status": "queued", "erased": list(users), "streams": streams}

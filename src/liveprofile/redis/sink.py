"""The collector's Redis sink: each request's events appended to the partition streams and its
rejected records to the dead-letter stream, before the request is answered.

>>> RedisSinkSettings(prefix="shop", partitions=4).partitions
4
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from liveprofile.errors import ConfigError, StoreError
from liveprofile.redis.entrykey import KEY_FIELD, entry_key
from liveprofile.redis.streams import FIELD, SEQ_BITS, partition_of, stream_key
from liveprofile.serving.sinks import SOURCE, Accepted, Rejected


@dataclass(frozen=True)
class RedisSinkSettings:
    """Append to ``{prefix}:events:{p}`` streams; dead letters to ``{prefix}:deadletters``."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "liveprofile"
    partitions: int = 1

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {self.partitions}")


class RedisSink:
    """Pipelines one XADD per event (and per dead letter) for each request.

    A request's dead letters are keyed ``http:SINK/MS-N/INDEX`` (:mod:`liveprofile.redis.entrykey`):
    SINK names this sink (one collector process), MS-N grows with each request that has dead
    letters (the time in milliseconds, or one more than the last), INDEX is the letter's place
    in the request."""

    status = 200

    def __init__(self, settings: RedisSinkSettings) -> None:
        self.settings = settings
        self.client = aioredis.Redis.from_url(settings.url)
        self.deadletters = f"{settings.prefix}:deadletters"
        self.source = f"{SOURCE}:{uuid.uuid4().hex[:16]}"
        self._last = 0

    def _keys(self, count: int) -> list[str]:
        """The keys of a request's ``count`` dead letters, above every key made before."""
        self._last = max(self._last + 1, int(time.time() * 1000) << SEQ_BITS)
        return [entry_key(self.source, self._last, i) for i in range(count)]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        await self.client.aclose()

    async def submit(self, accepted: list[Accepted], rejected: list[Rejected]) -> None:
        if not accepted and not rejected:
            return
        prefix, partitions = self.settings.prefix, self.settings.partitions
        pipe = self.client.pipeline(transaction=False)
        for item in accepted:
            stream = stream_key(prefix, partition_of(item.event.user, partitions))
            pipe.xadd(stream, {FIELD: item.raw})
        keys = self._keys(len(rejected)) if rejected else []
        for bad, key in zip(rejected, keys, strict=True):
            pipe.xadd(
                self.deadletters,
                {"raw": bad.raw, "reason": bad.reason, "source": SOURCE, KEY_FIELD: key},
            )
        try:
            await pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"cannot append to Redis at {self.settings.url}: {exc}") from None

    async def check(self) -> str | None:
        try:
            await self.client.ping()
        except redis.RedisError as exc:
            return f"Redis at {self.settings.url} is unreachable: {exc}"
        return None

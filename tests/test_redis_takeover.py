"""Taking over on real Redis: a stream entry another consumer left idle, and a writer lease
that expired with nobody taking it over (see also test_redis_scoped_recovery.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from redis_server import RedisServer

from liveprofile.redis.lease import Lease
from liveprofile.redis.streams import StreamReader


def _wait(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_reader_claims_one_entry_left_idle_by_another_consumer(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    stream = "claim-one:events:0"
    entry = client.xadd(stream, {"e": '{"event_id":"e1","user_id":"u1","type":"view","ts":1}'})
    first = StreamReader(client, stream, "g", "first")
    first.ensure_group()
    assert first.read(10, 0, 0) is not None  # delivered to "first", never acknowledged
    time.sleep(0.01)
    second = StreamReader(client, stream, "g", "second", claim_idle_ms=1)
    batch = second.read(10, 0, 0)
    assert batch is not None and batch.ids == [entry]
    assert [e.event_id for e in batch.events] == ["e1"]
    client.delete(stream)
    client.close()


def test_a_lease_that_expired_unclaimed_is_taken_again(server: RedisServer) -> None:
    """A Redis down for longer than the lease loses the key (it expires while the worker waits
    to reconnect): nobody took the lease over, so the worker keeps it rather than stopping."""
    key = "lease-again:writer:p0"
    lease = Lease(redis.Redis.from_url(server.url), key, "w0", 0.3)
    client = redis.Redis.from_url(server.url)
    try:
        client.delete(key)  # expired meanwhile
        _wait("the lease taken again", lambda: client.get(key) == lease.token.encode())
        assert not lease.lost
        client.set(key, "w9 elsewhere:1 x", px=5_000)  # taken over by another worker
        _wait("the holder to notice", lambda: lease.lost, timeout=5)
        assert client.get(key) == b"w9 elsewhere:1 x"
    finally:
        lease.release()
        client.delete(key)
        client.close()

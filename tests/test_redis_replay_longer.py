"""A batch that Redis lost made again over more entries: its reader reads each change once.

A Redis with ``appendfsync everysec`` that loses its last second may lose the delivery of a
batch's entries with the batch's commit. If more entries arrived meanwhile, the worker's batch
made again reads them too: it ends later than the lost one, so its segment changes come under
keys the reader has not seen. A real server of this module's own, put back in time with
``DUMP``/``RESTORE`` (as in ``test_redis_reconnect.py``) right after the first batch's commit,
when more events arrive; a :class:`Follower` reads the change stream after each commit.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import redis
import test_redis_scoped_recovery as recovery
from redis_server import RedisServer
from test_redis_exactly_once import Followed, _entries, _in_process
from test_redis_scoped_recovery import CONFIG, Role

from liveprofile.profile.state import decode_profile
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.redis.streams import publish

events = recovery.events
#: segments users enter and never leave, so which changes there are does not depend on the cuts
SEGMENTS = CONFIG + '[segments]\nany = "events >= 1"\nregular = "events >= 4"\n'
#: entries published before the worker starts: its first batch (a batch holds up to 10)
FIRST = 7
ONE = Role((0,), None)


class MoreArrive(Followed):
    """The server goes back to before the worker started (its consumer group too) right after
    the first batch's commit, once the followers read it; then ``more`` entries arrive."""

    def __init__(self, url: str, prefix: str, more: list[bytes]) -> None:
        super().__init__(url, prefix=prefix, keep=0, fail=1, silent=True)
        self.more = more

    def _go_back(self) -> None:
        super()._go_back()
        publish(self.client, self.prefix, 1, self.more)


def _run(url: str, prefix: str, store: FencedRedisStore) -> None:
    worker = _in_process(url, prefix, ONE, store, SEGMENTS)
    try:
        worker.run(max_idle_polls=3)
    finally:
        store.close()
        worker.client.close()


def _changes(read: list[dict[str, str]]) -> Counter[tuple[str, str, str]]:
    return Counter((c["user_id"], c["segment"], c["change"]) for c in read)


def test_a_batch_made_again_over_more_entries_has_its_changes_read_once(
    server: RedisServer, events: Path
) -> None:
    url, lines = server.url, events.read_bytes().splitlines()
    client = redis.Redis.from_url(url)
    try:
        publish(client, "longer-steady", 1, lines)
        publish(client, "longer", 1, lines[:FIRST])
    finally:
        client.close()
    _run(url, "longer-steady", FencedRedisStore(url, prefix="longer-steady"))
    store = MoreArrive(url, "longer", lines[FIRST:])
    _run(url, "longer", store)
    store.follow()
    store.reader.close()
    assert store.lost
    changes = "segment-changes"
    plain, read = _changes(store.plain[changes]), _changes(store.followed[changes])
    # the first batch's changes were read before the server went back, and made again
    assert any(n > 1 for n in plain.values())
    assert read == _changes(_entries(url, "longer-steady", changes))
    assert set(read.values()) == {1}
    members = FencedRedisStore(url, prefix="longer")
    try:
        stored = {(u, s) for u, b in members.scan("profile") for s in decode_profile(b).segments}
    finally:
        members.close()
    assert {(u, s) for u, s, _ in read} == stored

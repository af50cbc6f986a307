"""A Redis Streams worker that stays up while Redis goes back in time under it.

A Redis without durable writes (``appendfsync everysec``, or none) that crashes and restarts has
lost its last commits: the store, the consumer group's read position and its pending entries
are as they were a few batches ago. Here that happens on cue, on a real server: the store below
snapshots every key of its prefix (``DUMP``) after one commit, and a few batches later, in the
middle of a batch (while the compiled step reads the shared model), puts the snapshot back
(``RESTORE``) and fails with a connection error, as a read from a server that just died would.
The worker reconnects, must notice that the store is older than its state, and replay from the
store's offsets: the final store equals an uninterrupted run's, byte for byte. This is the
deterministic form of the ``reconnected`` cases of ``test_redis_everysec.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import redis
import test_redis_scoped_recovery as recovery
from redis_server import RedisServer
from test_redis_scoped_recovery import BATCH, BOTH, CONFIG, Role, _dump, _publish

from liveprofile.config import PipelineConfig
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.base import Rows

#: the same events as the recovery tests (their fixture)
events = recovery.events


class GoesBackInTime(FencedRedisStore):
    """A store whose server loses every write after batch commit ``keep`` once the one numbered
    ``fail`` is being prepared: at the batch's first read of the shared model the prefix's
    keys are put back as they were after commit ``keep``, and the read fails as on a server
    that died (the writer leases are left alone). With ``silent``, the keys are put back
    right after commit ``fail`` instead, and nothing fails: a client that re-made its
    connection to the restarted server by itself (redis-py does when it finds a pooled
    connection closed) sees no error at all."""

    def __init__(self, url: str, *, prefix: str, keep: int, fail: int, silent: bool) -> None:
        super().__init__(url, prefix=prefix)
        self.keep, self.fail, self.silent = keep, fail, silent
        self.commits = 0
        self.snapshot: dict[bytes, bytes] | None = None
        self.lost = False
        if keep == 0:  # as before the worker wrote anything (its consumer groups too)
            self.snapshot = {k: bytes(self.client.dump(k)) for k in self._keys()}

    def _keys(self) -> list[bytes]:
        keys = self.client.scan_iter(match=f"{self.prefix}:*", count=1000)
        return [k for k in keys if b":writer" not in k]

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        batch = self.fence is not None  # not the model headers written before any batch
        super().commit(rows, meta)
        if not batch:
            return
        self.commits += 1
        if self.commits == self.keep:
            self.snapshot = {k: bytes(self.client.dump(k)) for k in self._keys()}
        if self.silent and self.commits == self.fail:
            self._go_back()

    def read_rows(self, namespace: str, indices: bytes, width: int) -> bytes:
        if not self.silent and not self.lost and self.commits + 1 == self.fail:
            self._go_back()
            raise redis.ConnectionError("the server went away (lost its last commits)")
        return super().read_rows(namespace, indices, width)

    def _go_back(self) -> None:
        assert self.snapshot is not None
        self.lost = True
        client = self.client
        client.delete(*self._keys())
        for key, blob in self.snapshot.items():
            client.restore(key, 0, blob)


def _run(url: str, prefix: str, role: Role, store: FencedRedisStore) -> None:
    client = redis.Redis.from_url(url)
    options = WorkerOptions(
        prefix, role.partitions, consumer=role.consumer, batch_size=BATCH, block_ms=50,
        scope=role.scope,
    )  # fmt: skip
    config = PipelineConfig.from_toml(CONFIG)
    try:
        worker = RedisWorker(config, store, client, options, sleep=lambda _: None)
        worker.run(max_idle_polls=3)
    finally:
        store.close()
        client.close()


@pytest.mark.parametrize(
    ("keep", "fail", "silent"),
    [(3, 7, False), (10, 12, False), (20, 26, False), (4, 8, True), (15, 16, True), (0, 5, True)],
)
def test_a_worker_that_stays_up_replays_what_the_store_lost(
    server: RedisServer, events: Path, keep: int, fail: int, silent: bool
) -> None:
    """Byte-equal to an uninterrupted run: profiles (their scores too), item statistics,
    pending examples, de-duplication window, checkpoint, dead letters and the shared model."""
    url = server.url
    _publish(url, f"steady{keep}", events)
    _run(url, f"steady{keep}", BOTH, FencedRedisStore(url, prefix=f"steady{keep}"))
    prefix = f"lost{keep}"
    _publish(url, prefix, events)
    store = GoesBackInTime(url, prefix=prefix, keep=keep, fail=fail, silent=silent)
    _run(url, prefix, BOTH, store)
    assert store.lost, "the store never went back"
    assert store.commits > fail  # the lost commits were made again, and more after them
    lost, steady = _dump(url, prefix), _dump(url, f"steady{keep}")
    assert lost.keys() == steady.keys()
    for name in sorted(steady):
        assert lost[name] == steady[name], name
    assert steady["profile"] and steady["item@all"]

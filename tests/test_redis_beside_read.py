"""Commits sent in the background while the next batch is read (``FencedRedisStore.overlap``,
on in the Kafka worker), on a Redis of this module's own: they land in order, reads see them
(those that do not wait for them see what they write), a failed one is reported with its
partition, and a read of the shared model's rows beside a commit in flight reads what the
store holds once it has landed, whether the commit lands before that read's own transaction or
after it (held with ``CLIENT PAUSE ... WRITE``: its ``EXEC`` waits while reads go on; let
through at the moment the read has found it in flight). The Kafka worker's overlapped runs are
in ``test_kafka_overlap.py``."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import redis
from redis_server import RedisServer

from liveprofile.redis.fence import CommitFailed, FencedRedisStore

#: guards the wait for a commit let through (the test fails, not hangs)
TIMEOUT = 30.0


@contextmanager
def writes_held(url: str) -> Iterator[None]:
    """Writes to the Redis at ``url`` wait inside (``CLIENT PAUSE WRITE``); reads go on."""
    admin = redis.Redis.from_url(url)
    admin.client_pause(120_000, all=False)
    try:
        yield
    finally:
        admin.client_unpause()
        admin.close()


def _f8(*values: float) -> bytes:
    return np.array(values, dtype="<f8").tobytes()


def _u4(*values: int) -> bytes:
    return np.array(values, dtype="<u4").tobytes()


#: the merge of the commit held in flight: rows 1 and 2 of model m, from (1.0, 2.0) to (3.0, 2.5)
HELD = (_u4(1, 2), _f8(1.0, 2.0), _f8(3.0, 2.5), 8)


def _model(store: FencedRedisStore, other: FencedRedisStore) -> None:
    """Rows 1 and 2 of model m committed by ``store``'s partition t.0 as (1.0, 2.0); then
    another worker's partition t.1 moves row 1 to 1.5 (``store`` then commits in the
    background, :attr:`~FencedRedisStore.overlap`)."""
    store.fence = ("t.0", 0)
    store.stage_rows("model:m", _u4(1, 2), _f8(0.0, 0.0), _f8(1.0, 2.0), 8)
    store.commit({}, {})
    other.fence = ("t.1", 0)
    other.stage_rows("model:m", _u4(1), _f8(1.0), _f8(1.5), 8)
    other.commit({}, {})
    store.overlap = True


def test_overlapped_commits_land_in_order_and_reads_wait_for_them(server: RedisServer) -> None:
    store = FencedRedisStore(server.url, prefix=f"ov-{uuid.uuid4().hex[:6]}")
    store.overlap = True
    try:
        for seq in range(30):
            store.fence = ("t.0", seq)
            store.commit({"profile": {"u1": str(seq).encode(), f"v{seq}": b"x"}}, {})
            store.fence = None
            # the same store's next use waits for the commit sent in the background
            assert store.read("profile", ["u1", f"v{seq}"]) == [str(seq).encode(), b"x"]
        store.fence = ("t.0", 30)
        store.commit({"profile": {"u1": b"last"}}, {})
        store.fence = None
        assert store.fence_value("t.0") == 31
        assert store.read("profile", ["u1"]) == [b"last"]
    finally:
        store.drop()
        store.close()


def test_a_failed_background_commit_names_its_partition(server: RedisServer) -> None:
    prefix = f"ov-{uuid.uuid4().hex[:6]}"
    first, stale = (
        FencedRedisStore(server.url, prefix=prefix),
        FencedRedisStore(server.url, prefix=prefix),
    )
    stale.overlap = True
    try:
        first.fence = stale.fence = ("t.3", 0)  # both loaded the partition at seq 0
        first.commit({"profile": {"u1": b"first"}}, {})
        stale.commit({"profile": {"u1": b"stale"}}, {})  # returns: sent in the background
        with pytest.raises(CommitFailed) as failed:
            stale.fence_value("t.3")  # waits for the commit in flight
        assert failed.value.scope == "t.3" and failed.value.fenced_out
        stale.fence = None
        assert stale.read("profile", ["u1"]) == [b"first"]  # reported once, then usable
        assert stale.fence_value("t.3") == 1
    finally:
        first.drop()
        first.close()
        stale.close()


def test_a_commit_redis_never_got_is_reported(tmp_path: Path) -> None:
    own = RedisServer(tmp_path, appendonly=False)
    own.start()
    store = FencedRedisStore(own.url, prefix="gone")
    store.overlap = True
    try:
        assert store.fence_value("t.0") == 0
        own.stop(signal.SIGKILL)
        store.fence = ("t.0", 0)
        store.commit({"profile": {"u1": b"lost"}}, {})
        with pytest.raises(CommitFailed) as failed:
            store.settle()
        assert failed.value.scope == "t.0" and not failed.value.fenced_out
        assert "cannot commit" in str(failed.value)
    finally:
        own.stop()
        store.close()


def test_reads_beside_a_commit_in_flight_see_what_it_writes(server: RedisServer) -> None:
    """Rows, key sets, other partitions' blobs and the shared model's rows are read while a
    commit is still in flight, and read what the store holds once it has landed."""
    prefix = f"ov-{uuid.uuid4().hex[:6]}"
    store, other = (
        FencedRedisStore(server.url, prefix=prefix),
        FencedRedisStore(server.url, prefix=prefix),
    )
    try:
        store.commit({"profile": {"u1": b"old", "u2": b"kept"}, "keys:x": {"a": b""}}, {})
        store.commit({}, {"checkpoint@t.1": b"c1"})
        _model(store, other)
        with writes_held(server.url):
            store.fence = ("t.0", 1)
            store.stage_rows("model:m", *HELD)
            rows = {"profile": {"u1": b"new", "u2": None}, "keys:x": {"a": None, "b": b""}}
            store.commit(rows, {"checkpoint@t.0": b"c0"})
            store.fence = None
            assert store.in_flight() == "t.0"
            assert other.read("profile", ["u1", "u2"]) == [b"old", b"kept"]  # not landed
            profiles = store.read("profile", ["u1", "u2", "u3"])
            keys = store.read("keys:x", ["a", "b"])
            blob = store.get_meta("checkpoint@t.1")
            model = store.read_rows("model:m", _u4(0, 1, 2), 8)
            assert store.in_flight() == "t.0"  # none of those waited for it
        assert profiles == [b"new", None, None] and keys == [None, b""] and blob == b"c1"
        # row 1 moved from 1.0 to 1.5 meanwhile: the batch's difference (2.0) is added
        assert np.frombuffer(model).tolist() == [0.0, 3.5, 2.5]
        store.settle()
        assert other.read_rows("model:m", _u4(0, 1, 2), 8) == model  # as landed
        assert other.read("profile", ["u1", "u2", "u3"]) == profiles
        assert other.read("keys:x", ["a", "b"]) == keys
    finally:
        store.drop()
        store.close()
        other.close()


class WaitsNoted(FencedRedisStore):
    """A store that counts its waits for a commit still in flight."""

    waits = 0

    def settle(self) -> None:
        if self._pending is not None and not self._pending[1].done():
            self.waits += 1
        super().settle()


def test_a_read_of_many_goes_beside_a_commit_in_flight_unless_it_writes_them(
    server: RedisServer,
) -> None:
    """Other partitions' checkpoints and batch announcements (the skew gate's look at the
    other workers) are read in one round trip beside the commit in flight; a read of many that
    includes something the commit writes waits for it, and reads what landed."""
    prefix = f"ov-{uuid.uuid4().hex[:6]}"
    store = WaitsNoted(server.url, prefix=prefix)
    try:
        store.commit({}, {"checkpoint@t.1": b"c1", "checkpoint@t.0": b"old"})
        store.client.hset(f"{prefix}:started", "t.1", b"7.0")
        store.overlap = True
        reads = {"meta": ["checkpoint@t.1", "checkpoint@t.2"], "started": ["t.1", "t.2"]}
        with writes_held(server.url):
            store.fence = ("t.0", 0)
            store.commit({"profile": {"u1": b"x"}}, {"checkpoint@t.0": b"new"})
            store.fence = None
            assert store.read_many(reads) == {"meta": [b"c1", None], "started": [b"7.0", None]}
            assert store.in_flight() == "t.0" and store.waits == 0  # that did not wait
            waiting = ThreadPoolExecutor(1).submit(store.read_many, {"meta": ["checkpoint@t.0"]})
            deadline = time.monotonic() + TIMEOUT
            while store.waits == 0 and time.monotonic() < deadline:  # for the commit
                time.sleep(0.01)
        assert waiting.result(TIMEOUT) == {"meta": [b"new"]} and store.waits == 1
    finally:
        store.drop()
        store.close()


class LandsWhenFound(FencedRedisStore):
    """A store whose commit in flight is let through, and lands, right after a read has found
    it in flight (:meth:`in_flight`), when ``release`` is set: that read's own transaction
    then comes after the commit."""

    release: Callable[[], None] | None = None

    def in_flight(self) -> str | None:
        scope = super().in_flight()
        if scope is not None and self.release is not None:
            release, self.release = self.release, None
            release()
        return scope


@pytest.mark.parametrize("lands", [True, False], ids=["lands-mid-read", "lands-after"])
def test_a_beside_read_of_the_model_reads_what_the_commit_lands(
    server: RedisServer, lands: bool
) -> None:
    """Row 1 also moved by another worker, from 1.0 to 1.5: the commit's merge adds its
    difference (2.0). Whether the commit lands between the read's check and its transaction
    (its fence then says so, and the rows are as merged) or after it (the read makes the merge
    itself), the read gives the rows as landed, merged once."""
    prefix = f"mid-{uuid.uuid4().hex[:6]}"
    store, other = (
        LandsWhenFound(server.url, prefix=prefix),
        LandsWhenFound(server.url, prefix=prefix),
    )
    admin = redis.Redis.from_url(server.url)
    fence = store.fence_key("t.0")

    def land() -> None:
        admin.client_unpause()
        deadline = time.monotonic() + TIMEOUT
        while admin.get(fence) != b"2":
            assert time.monotonic() < deadline, "the commit did not land"
            time.sleep(0.01)

    try:
        _model(store, other)
        with writes_held(server.url):
            store.fence = ("t.0", 1)
            store.stage_rows("model:m", *HELD)
            store.commit({}, {})
            store.fence = None
            store.release = land if lands else None
            model = store.read_rows("model:m", _u4(0, 1, 2), 8)
            assert admin.get(fence) == (b"2" if lands else b"1")
        assert np.frombuffer(model).tolist() == [0.0, 3.5, 2.5]
        store.settle()
        assert other.read_rows("model:m", _u4(0, 1, 2), 8) == model
    finally:
        store.drop()
        store.close()
        other.close()
        admin.close()

"""Scoped Redis Streams workers on a server with ``appendonly yes`` and ``appendfsync everysec``.

With ``everysec`` Redis fsyncs its append-only file once a second: ``kill -9`` of the server
alone loses nothing the kernel already holds, but a crash of the machine (or a server whose
fsync lags, which postpones its writes by up to two seconds) loses the **tail** of the AOF, up
to about a second of acknowledged writes, whole commands in order; a ``MULTI``/``EXEC`` cut in
two is dropped whole when the file is loaded. The tests make that loss happen for sure: they
kill the server with ``kill -9`` mid-stream and cut its AOF back to the length it had a few
commits earlier, at a byte inside a command, as a lost second would, and restart it from there.

What holds then (and is asserted): the store is the state after its last surviving commit
(profiles, model merges, dead letters, checkpoint and offsets of a batch commit together or not
at all); the worker, restarted or merely reconnected, reloads its state from the store (a
reconnected one drops everything it held in memory, its core's arrays too; see
test_redis_reconnect.py for the same loss made on cue), reads again from the offsets in the
store (the stream entries it had read are pending again or new again), and so applies every
event once relative to the store's own committed offsets: the final store equals an
uninterrupted run's. What cannot hold: entries appended to the event streams in the lost second
are lost (publish with ``appendfsync always``, or check the streams' lengths after a crash);
entries of the dead-letter and segment-change streams that readers consumed before the crash are
appended again on replay, with the same keys, for readers to drop (test_redis_exactly_once.py).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import test_redis_scoped_recovery as recovery
from redis_server import RedisServer
from test_redis_scoped_recovery import (
    ALONE,
    BOTH,
    P0,
    P1,
    Role,
    _check_once,
    _dump,
    _order_free,
    _publish,
    _run_in_process,
    _seq,
    _wait,
    _worker,
)

TIMEOUT = 90.0
#: the same events and pipeline as the recovery tests (their fixtures)
events, config_file = recovery.events, recovery.config_file


def _rewrite(server: RedisServer) -> None:
    """Rewrite the AOF (a new base file, fsynced, and an empty increment): what was written
    so far, the published streams, survives whatever the tail loses."""
    client = redis.Redis.from_url(server.url)
    try:
        client.bgrewriteaof()

        def done() -> bool:
            info = client.info("persistence")
            return not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]

        _wait("the AOF rewrite", done)
        assert client.info("persistence")["aof_last_bgrewrite_status"] == "ok"
    finally:
        client.close()


def _increment(server: RedisServer) -> Path:
    """The AOF's increment file, the one commands are appended to (Redis 7's manifest)."""
    manifest = (server.dir / "appendonlydir" / "appendonly.aof.manifest").read_text()
    names = [
        line.split()[1] for line in manifest.splitlines() if line.split()[-1] == "i"
    ]  # "file NAME seq N type i"
    return server.dir / "appendonlydir" / names[-1]


def _lose_the_tail(server: RedisServer, length: int) -> None:
    """Crash the server and cut its AOF increment back to ``length`` bytes and a part of the
    next command: the writes a machine crash loses with ``everysec``."""
    path = _increment(server)
    server.stop(signal.SIGKILL)
    data = path.read_bytes()
    assert len(data) > length + 64, "no commit after the cut"
    with open(path, "r+b") as fh:
        fh.truncate(length + 37)  # inside a command: Redis drops the partial one on load


def _commits(url: str, prefix: str, roles: tuple[Role, ...]) -> int:
    """The commits of the scope of ``roles`` that committed least."""
    return min(_seq(url, prefix, r.scope) for r in roles)


def _total(url: str, prefix: str, roles: tuple[Role, ...]) -> int:
    return sum(_seq(url, prefix, r.scope) for r in roles)


def _scenario(
    server: RedisServer,
    prefix: str,
    roles: tuple[Role, ...],
    config: Path,
    log: Path,
    *,
    restart_workers: bool,
) -> tuple[int, int]:
    """Run the workers of ``roles``; after a few commits note the AOF's length, after a few
    more crash Redis losing what came after it, restart it (and the workers, with
    ``restart_workers``, killed meanwhile) and let them finish. Returns the commits of all
    their scopes before the crash and just after the restart."""
    url = server.url
    workers = [_worker(url, prefix, r, config, log, idle_exit=10) for r in roles]
    try:
        _wait("first commits", lambda: _commits(url, prefix, roles) >= 3)
        cut = _increment(server).stat().st_size
        kept = _commits(url, prefix, roles)
        _wait("more commits", lambda: _commits(url, prefix, roles) >= kept + 4)
        if restart_workers:
            for w in workers:
                os.kill(w.pid, signal.SIGKILL)
                w.wait(timeout=TIMEOUT)
        before = _total(url, prefix, roles)
        _lose_the_tail(server, cut)
        time.sleep(0.3)  # the workers that run meet a server that is down
        server.start()
        after = _total(url, prefix, roles)
        if restart_workers:
            workers = [_worker(url, prefix, r, config, log, idle_exit=10) for r in roles]
        for w in workers:
            assert w.wait(timeout=TIMEOUT * 2) == 0, log.read_text()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    return before, after


@pytest.mark.parametrize(
    "restart_workers",
    [pytest.param(False, id="reconnected"), pytest.param(True, id="restarted")],
)
def test_one_scoped_worker_survives_losing_the_aof_tail(
    everysec: RedisServer,
    events: Path,
    config_file: Path,
    tmp_path: Path,
    restart_workers: bool,
) -> None:
    """One scoped worker owning both partitions: after the lost tail its store is byte-equal
    (profile rows, dead letters, checkpoint, model) to an uninterrupted worker's without
    scope, as after a kill of the worker alone (test_redis_scoped_recovery)."""
    url = everysec.url
    _publish(url, "alone", events)
    _run_in_process(url, "alone", ALONE)
    _publish(url, "one", events)
    _rewrite(everysec)
    log = tmp_path / "one.log"
    before, after = _scenario(
        everysec, "one", (BOTH,), config_file, log, restart_workers=restart_workers
    )
    assert after < before, (after, before)  # commits were lost, and replayed
    one, alone = _dump(url, "one"), _dump(url, "alone")
    assert one["profile"] == alone["profile"] and one["profile"]
    for name in ("deadletter", "deadletters"):
        assert one[name] == alone[name], name
    assert one["checkpoint@all"] == alone["checkpoint"]
    assert _models(url, "one") == _models(url, "alone")
    if not restart_workers:
        assert "redis unreachable" in log.read_text()


def test_two_scoped_workers_survive_losing_the_aof_tail(
    everysec: RedisServer, events: Path, config_file: Path, tmp_path: Path
) -> None:
    """Two scoped workers sharing the model, both reconnecting: what does not depend on how
    their batches interleave equals the uninterrupted run's, and every entry is applied,
    de-duplicated or dead-lettered once, every example merged once into the shared model."""
    url = everysec.url
    _publish(url, "reference", events)
    for role in (P0, P1):
        _run_in_process(url, "reference", role)
    reference = _dump(url, "reference")
    published = _publish(url, "pair", events)
    _rewrite(everysec)
    log = tmp_path / "pair.log"
    before, after = _scenario(everysec, "pair", (P0, P1), config_file, log, restart_workers=False)
    assert after < before, (after, before)
    assert _order_free(_dump(url, "pair")) == _order_free(reference)
    _check_once(url, "pair", events, published)


def _models(url: str, prefix: str) -> dict[str, Any]:
    """Each task's model as its arrays (shared rows or one blob alike)."""
    from test_redis_scoped_recovery import TASKS

    from liveprofile.learn.stored import StoredModels
    from liveprofile.redis.fence import FencedRedisStore

    store = FencedRedisStore(url, prefix=prefix)
    try:
        out: dict[str, Any] = {}
        for task in TASKS:
            model = StoredModels(store).get(task, seq=0)
            arrays = {} if model is None else model.arrays()  # type: ignore[attr-defined]
            out[task] = {name: a.tobytes() for name, a in arrays.items() if a.any()}
        return out
    finally:
        store.close()

"""Crash recovery of scoped Redis Streams workers that share one model (``run.shared_model``).

Real ``redis-server`` processes on spare ports, real ``liveprofile worker --scope`` processes
killed with ``kill -9`` (inside batches among other places) and restarted:

* one scoped worker owning both partitions: its stored profile rows, dead letters, checkpoint
  and model are byte-equal to an uninterrupted worker's without scope (one model blob);
* two scoped workers at once, one of them killed and restarted: what does not depend on the
  order in which the two workers' batches reach the shared model equals the uninterrupted
  run's (profile rows but for their model scores, event counts per user, applied counters,
  dead letters, examples learned by the shared model, each merged once);
* the Redis server itself killed (AOF, ``appendfsync always``) and restarted under both
  workers: they reconnect and end as above;
* a worker restarted under another consumer name takes over the entries its predecessor read
  but never committed: the whole store, shared model included, is byte-equal to an
  uninterrupted run's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import redis
from children import popen
from redis_server import RedisServer, running

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.errors import ConfigError, InvalidEvent
from liveprofile.events.deadletter import DeadLetter
from liveprofile.events.schema import EventParser
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.stored import StoredModels, shared_learned
from liveprofile.profile.state import decode_profile
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.redis.streams import StreamReader, entry_offset, publish, stream_key
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.layout import MODEL_LEARNED, Checkpoint, metrics_meta
from liveprofile.store.scoped import ScopedStore

CONFIG = "[run]\nbatch_size = 200\n[features]\nbits = 14\n"
TASKS = [t.name for t in PipelineConfig.from_toml(CONFIG).tasks]
#: small batches, so that a kill lands inside one more often than between two
BATCH = 10
SCOPES = ("p0", "p1")
TIMEOUT = 90.0


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(
        path, SyntheticConfig(users=60, days=5, seed=11), invalid_rate=0.02, duplicate_rate=0.02
    )
    return path


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "pipeline.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(server: RedisServer, events: Path) -> dict[str, Any]:
    """The uninterrupted run: worker p0 to the end of its stream, then worker p1 (in-process,
    the same worker the command runs)."""
    _publish(server.url, "reference", events)
    for role in (P0, P1):
        _run_in_process(server.url, "reference", role)
    return _dump(server.url, "reference")


# -- running and killing workers


def _publish(url: str, prefix: str, events: Path) -> int:
    client = redis.Redis.from_url(url)
    with open(events, "rb") as fh:
        published = publish(client, prefix, 2, fh).published
    client.close()
    return published


@dataclass(frozen=True)
class Role:
    """A worker: the partitions it owns and its ``--scope`` (None: none)."""

    partitions: tuple[int, ...]
    scope: str | None

    @property
    def consumer(self) -> str:
        return "w" + "".join(map(str, self.partitions))


P0, P1, BOTH, ALONE = Role((0,), "p0"), Role((1,), "p1"), Role((0, 1), "all"), Role((0, 1), None)


def _run_in_process(url: str, prefix: str, role: Role, consumer: str | None = None) -> None:
    store = FencedRedisStore(url, prefix=prefix)
    client = redis.Redis.from_url(url)
    options = WorkerOptions(
        prefix,
        role.partitions,
        consumer=consumer or role.consumer,
        batch_size=BATCH,
        block_ms=50,
        scope=role.scope,
    )
    try:
        RedisWorker(PipelineConfig.from_toml(CONFIG), store, client, options).run(max_idle_polls=3)
    finally:
        store.close()
        client.close()


def _worker(
    url: str, prefix: str, role: Role, config: Path, log: Path, idle_exit: int = 3
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "liveprofile.cli", "worker", "--redis", url, "--prefix", prefix]
    args += ["--partitions", ",".join(map(str, role.partitions)), "--of", "2"]
    args += [] if role.scope is None else ["--scope", role.scope]
    args += ["--consumer", role.consumer, "--config", str(config), "--batch-size", str(BATCH)]
    args += ["--block-ms", "200", "--idle-exit", str(idle_exit)]
    with open(log, "ab") as err:
        return popen(args, stdout=subprocess.DEVNULL, stderr=err)


def _checkpoint(url: str, prefix: str, scope: str | None) -> Checkpoint | None:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        blob = client.hget(f"{prefix}:meta", "checkpoint" + ("" if scope is None else f"@{scope}"))
    except redis.ConnectionError:
        return None
    finally:
        client.close()
    return None if blob is None else msgspec.msgpack.decode(bytes(blob), type=Checkpoint)


def _seq(url: str, prefix: str, scope: str | None) -> int:
    ckpt = _checkpoint(url, prefix, scope)
    return 0 if ckpt is None else ckpt.seq


def _wait(what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _committed_or_exited(
    proc: subprocess.Popen[bytes], url: str, prefix: str, scope: str | None, target: int
) -> Callable[[], bool]:
    return lambda: proc.poll() is not None or _seq(url, prefix, scope) >= target


def _where_killed(url: str, prefix: str, role: Role) -> str:
    """Where the killed worker stopped, from the entries it left pending: ``inside`` a batch
    (read, not committed), ``unacked`` (committed, not acknowledged) or ``between`` batches."""
    client = redis.Redis.from_url(url)
    ckpt = _checkpoint(url, prefix, role.scope)
    landed = "between"
    for p in role.partitions:
        stream = stream_key(prefix, p)
        pending = client.xpending_range(stream, "liveprofile", "-", "+", 1000, role.consumer)
        committed = 0 if ckpt is None else ckpt.offsets.get(stream, 0)
        if any(entry_offset(e["message_id"]) > committed for e in pending):
            landed = "inside"
        elif pending and landed == "between":
            landed = "unacked"
    client.close()
    return landed


def _kill_and_restart(
    url: str, prefix: str, role: Role, config: Path, log: Path, seed: int, kills: int = 3
) -> list[str]:
    """Start the worker of ``role``, kill it ``kill -9`` after a few of its commits (at a
    random point of the batch then running), ``kills`` times, then let it run to the end; where
    each kill landed (see :func:`_where_killed`)."""
    rng = random.Random(seed)
    landed: list[str] = []
    while len(landed) < kills or ("inside" not in landed and len(landed) < kills + 4):
        target = _seq(url, prefix, role.scope) + rng.randint(1, 5)
        proc = _worker(url, prefix, role, config, log)
        _wait("a commit", _committed_or_exited(proc, url, prefix, role.scope, target))
        time.sleep(rng.uniform(0.0, 0.03))
        if proc.poll() is not None:
            break  # it reached the end of its streams first
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        landed.append(_where_killed(url, prefix, role))
    proc = _worker(url, prefix, role, config, log)
    assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()
    return landed


# -- what a store holds


def _dump(url: str, prefix: str) -> dict[str, Any]:
    """Every key of ``prefix`` but the event streams and leases: hashes as dicts, streams as
    their entries' fields in order, sorted sets as their members, other strings as they are.
    What names an entry of the event streams (checkpoint offsets, dead-letter keys, the ``key``
    of dead-letter and segment-change entries) is left out: the compared stores read equal
    streams appended at other times."""
    client = redis.Redis.from_url(url)
    out: dict[str, Any] = {}
    try:
        for raw_key in client.scan_iter(match=f"{prefix}:*", count=1000):
            key = raw_key.decode()
            name = key[len(prefix) + 1 :]
            if name.startswith(("events:", "writer")):
                continue
            kind = client.type(key).decode()
            if kind == "hash":
                out[name] = {k.decode(): bytes(v) for k, v in client.hgetall(key).items()}
            elif kind == "stream":  # entries name their source stream: with another prefix
                tag, same = prefix.encode() + b":", b"PREFIX:"
                out[name] = [
                    {k: v.replace(tag, same) for k, v in fields.items() if k != b"key"}
                    for _, fields in client.xrange(key)
                ]
            elif kind == "zset":  # a key set (the links' index by target)
                out[name] = client.zrange(key, 0, -1)
            else:
                assert kind == "string", (key, kind)
                out[name] = client.get(key)
    finally:
        client.close()
    meta = out["meta"]
    for name in [n for n in meta if n.startswith("checkpoint")]:
        ckpt = msgspec.msgpack.decode(meta.pop(name), type=Checkpoint)
        out[name] = msgspec.structs.replace(ckpt, offsets={})
    out.pop("scope", None)  # the same checkpoints again
    letters = [msgspec.json.decode(v, type=DeadLetter) for v in out.pop("deadletter").values()]
    out["deadletter"] = sorted((d.raw, d.reason) for d in letters)
    return out


def _order_free(dump: dict[str, Any]) -> dict[str, Any]:
    """What of a store does not depend on the order in which two workers' batches reach the
    shared model: profile rows without their model scores, item statistics, de-duplication
    windows, checkpoints, dead letters (as a set), examples learned per task."""
    profiles = {
        user: msgspec.structs.replace(decode_profile(blob), scores={})
        for user, blob in dump["profile"].items()
    }
    out: dict[str, Any] = {"profile": profiles, "deadletter": dump["deadletter"]}
    out["deadletters"] = sorted(sorted(f.items()) for f in dump["deadletters"])
    for name, value in dump.items():
        if name.startswith(("item@", "dedup@", "checkpoint@", "fence:")):
            out[name] = value
    for task in TASKS:
        out[f"learned:{task}"] = dump.get(f"model:{task}", {}).get(MODEL_LEARNED)
    return out


def _expected_counts(events: Path) -> dict[str, int]:
    """Events per user in the input: those that parse, each ``event_id`` once."""
    parser, seen, counts = EventParser(), set(), dict[str, int]()
    for line in events.read_bytes().splitlines():
        try:
            event = parser.parse_json(line)
        except InvalidEvent:
            continue
        if event.event_id not in seen:
            seen.add(event.event_id)
            counts[event.user] = counts.get(event.user, 0) + 1
    return counts


def _check_once(url: str, prefix: str, events: Path, published: int) -> None:
    """Every entry applied, de-duplicated or dead-lettered exactly once; every learned example
    merged into the shared model exactly once."""
    profiles = FencedRedisStore(url, prefix=prefix)
    try:
        counts = {u: decode_profile(b).n for u, b in profiles.scan("profile")}
        assert counts == _expected_counts(events)
        ckpts = [_checkpoint(url, prefix, s) for s in SCOPES]
        assert all(c is not None for c in ckpts)
        total = sum(c.events + c.duplicates + c.dead_letters for c in ckpts if c is not None)
        assert total == published
        learned = {}
        for task in TASKS:
            scored = 0
            for scope in SCOPES:
                blob = ScopedStore(profiles, scope).get_meta(metrics_meta(task))
                scored += 0 if blob is None else Prequential.from_bytes(blob).n
            learned[task] = shared_learned(profiles, task)
            assert learned[task] == scored, task
        assert learned["convert"] > 0
    finally:
        profiles.close()


# -- the tests


def test_one_scoped_worker_killed_ends_as_one_worker_without_scope(
    server: RedisServer, events: Path, config_file: Path, tmp_path: Path
) -> None:
    """One scoped worker owning both partitions trains the shared model alone: killed and
    restarted, its profile rows and model equal those of an uninterrupted worker that keeps
    its model as one blob (no scope, no sharing)."""
    _publish(server.url, "alone", events)
    _run_in_process(server.url, "alone", ALONE)
    _publish(server.url, "one", events)
    landed = _kill_and_restart(
        server.url, "one", BOTH, config_file, tmp_path / "one.log", seed=5, kills=2
    )
    assert "inside" in landed, landed
    one, alone = _dump(server.url, "one"), _dump(server.url, "alone")
    assert one["profile"] == alone["profile"] and one["profile"]  # the stored bytes
    for name in ("deadletter", "deadletters"):
        assert one[name] == alone[name], name
    assert one["checkpoint@all"] == alone["checkpoint"]
    stores = [FencedRedisStore(server.url, prefix=p) for p in ("one", "alone")]
    try:
        for task in TASKS:
            shared, whole = (StoredModels(store).get(task, seq=0) for store in stores)
            if whole is None:
                assert shared is None or shared_learned(stores[0], task) == 0, task
                continue
            assert shared is not None, task
            theirs = whole.arrays()  # type: ignore[attr-defined]
            for name, array in shared.arrays().items():  # type: ignore[attr-defined]
                assert np.array_equal(array, theirs[name]), (task, name)
    finally:
        for store in stores:
            store.close()


def test_killed_worker_beside_a_running_one_applies_everything_once(
    server: RedisServer,
    events: Path,
    config_file: Path,
    reference: dict[str, Any],
    tmp_path: Path,
) -> None:
    published = _publish(server.url, "beside", events)
    log = tmp_path / "beside.log"
    other = _worker(server.url, "beside", P1, config_file, log, idle_exit=10)
    try:
        landed = _kill_and_restart(server.url, "beside", P0, config_file, log, seed=7, kills=2)
        assert other.wait(timeout=TIMEOUT) == 0, log.read_text()
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
    assert "inside" in landed, landed
    assert _order_free(_dump(server.url, "beside")) == _order_free(reference)
    _check_once(server.url, "beside", events, published)


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of its own whose acknowledged writes survive ``kill -9``."""
    yield from running(tmp_path / "redis", fsync="always")


def test_workers_resume_after_redis_is_killed(
    durable: RedisServer,
    events: Path,
    config_file: Path,
    reference: dict[str, Any],
    tmp_path: Path,
) -> None:
    url = durable.url
    published = _publish(url, "crashed", events)
    log = tmp_path / "crashed.log"
    workers = [_worker(url, "crashed", r, config_file, log, idle_exit=10) for r in (P0, P1)]
    try:
        _wait("commits of both", lambda: min(_seq(url, "crashed", s) for s in SCOPES) >= 3)
        durable.stop(signal.SIGKILL)
        time.sleep(0.5)
        assert all(w.poll() is None for w in workers), log.read_text()
        durable.start()
        for w in workers:
            assert w.wait(timeout=TIMEOUT) == 0, log.read_text()
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert log.read_text().count("redis unreachable") >= 2
    assert _order_free(_dump(url, "crashed")) == _order_free(reference)
    _check_once(url, "crashed", events, published)


def test_a_renamed_worker_takes_over_what_its_predecessor_left_unapplied(
    server: RedisServer, events: Path, reference: dict[str, Any]
) -> None:
    published = _publish(server.url, "renamed", events)
    # the first worker of partition 0 reads a batch and dies before committing it
    client = redis.Redis.from_url(server.url)
    reader = StreamReader(client, stream_key("renamed", 0), "liveprofile", "w0")
    reader.ensure_group()
    assert reader.read(BATCH, 0, 0) is not None
    client.close()
    # its successor runs under another name (a new host), once the first one's lease is gone
    _run_in_process(server.url, "renamed", P0, "w0-new")
    _run_in_process(server.url, "renamed", P1)
    dump = _dump(server.url, "renamed")
    for name in sorted(reference):
        assert dump[name] == reference[name], name
    _check_once(server.url, "renamed", events, published)


def test_a_partition_committed_by_one_scope_is_refused_to_another(
    server: RedisServer, events: Path
) -> None:
    _publish(server.url, "owned", events)
    _run_in_process(server.url, "owned", P0)
    store = FencedRedisStore(server.url, prefix="owned")
    client = redis.Redis.from_url(server.url)
    config = PipelineConfig.from_toml(CONFIG)
    try:
        for scope in ("p1", None):  # partition 0 is scope p0's
            options = WorkerOptions("owned", [0, 1], consumer="w", block_ms=50, scope=scope)
            with pytest.raises(ConfigError, match="owned:events:0 is committed by scope 'p0'"):
                RedisWorker(config, store, client, options).run(max_idle_polls=1)
    finally:
        store.close()
        client.close()

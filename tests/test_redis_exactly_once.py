"""What a Redis Streams worker's readers and rivals see when Redis goes back in time under it.

Real servers of their own (this module's ``server``), the store put back in time on cue with
``DUMP``/``RESTORE`` as in ``test_redis_reconnect.py`` (a Redis with ``appendfsync everysec``
that lost its last second), and real workers:

* a reader that follows the dead-letter and segment-change streams while the worker commits
  reads each entry once, though the worker appends the entries of the lost commits again: the
  entries it reads are exactly the uninterrupted run's, in order;
* ``--trim`` trims in the batch's commit, so a commit the server loses loses its trim too (a
  trim sent after it would delete entries the store has not applied), and it leaves what
  another consumer group has not read and acknowledged;
* a worker without ``--scope`` is fenced: a second one under the same consumer name (a restart
  on another host while the first is stalled) takes over, and the first one's commit on the
  state it loaded before is refused; a batch that would skip entries another reader of the
  group was delivered is read again; two such ``liveprofile worker`` processes started at once
  apply every event once between them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import test_redis_scoped_recovery as recovery
from redis_server import RedisServer
from test_redis_reconnect import GoesBackInTime
from test_redis_scoped_recovery import (
    ALONE,
    BATCH,
    BOTH,
    CONFIG,
    TIMEOUT,
    Role,
    _checkpoint,
    _dump,
    _expected_counts,
    _publish,
    _worker,
)

from liveprofile.config import PipelineConfig
from liveprofile.errors import StoreLocked
from liveprofile.profile.state import decode_profile
from liveprofile.redis.changes import change_stream
from liveprofile.redis.entrykey import FIRST_FIELD, KEY_FIELD, Follower
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import stream_key
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.base import Rows

#: the recovery tests' events, with segments that users enter (and leave) as they come
events, config_file = recovery.events, recovery.config_file
#: fields that name event entries, which differ from one run to another
SKIPPED = (KEY_FIELD, FIRST_FIELD)
SEGMENTS = CONFIG + '[segments]\nany = "events >= 1"\nrecent = "days_since_last_event < 1"\n'


def _in_process(
    url: str, prefix: str, role: Role, store: RedisStore, config: str, **options: Any
) -> RedisWorker:
    settings = WorkerOptions(
        prefix, role.partitions, consumer=role.consumer, batch_size=BATCH, block_ms=50,
        scope=role.scope, **options,
    )  # fmt: skip
    client = redis.Redis.from_url(url)
    return RedisWorker(PipelineConfig.from_toml(config), store, client, settings)


def _run(
    url: str, prefix: str, role: Role, store: FencedRedisStore, config: str, **kw: Any
) -> None:
    worker = _in_process(url, prefix, role, store, config, **kw)
    try:
        worker.run(max_idle_polls=3)
    finally:
        store.close()
        worker.client.close()


def _entries(url: str, prefix: str, name: str) -> list[dict[str, str]]:
    """The entries of the stream ``{prefix}:{name}``, as :func:`_fields` gives them."""
    client = redis.Redis.from_url(url)
    try:
        return [_fields(f, prefix) for _, f in client.xrange(f"{prefix}:{name}")]
    finally:
        client.close()


def _fields(fields: Mapping[Any, Any], prefix: str) -> dict[str, str]:
    """An entry's fields as text without its key and its batch's first entry (which name
    event entries of ``prefix``), the prefix in the source of a dead letter as ``PREFIX``."""
    text = {
        (k.decode() if isinstance(k, bytes) else k): v.decode() if isinstance(v, bytes) else v
        for k, v in fields.items()
    }
    return {k: v.replace(f"{prefix}:", "PREFIX:") for k, v in text.items() if k not in SKIPPED}


class Followed(GoesBackInTime):
    """A store going back in time (see :class:`GoesBackInTime`) whose dead-letter and
    segment-change streams two readers follow, one after each commit and one more just before
    the store goes back: :class:`Follower`, and a plain reader from the last entry id read."""

    def __init__(self, url: str, *, prefix: str, keep: int, fail: int, silent: bool) -> None:
        super().__init__(url, prefix=prefix, keep=keep, fail=fail, silent=silent)
        self.reader = redis.Redis.from_url(url)
        streams = [f"{prefix}:deadletters", change_stream(prefix)]
        self.followers = {s[len(prefix) + 1 :]: Follower(self.reader, s) for s in streams}
        self.plain: dict[str, list[dict[str, str]]] = {name: [] for name in self.followers}
        self.last = dict.fromkeys(self.followers, "0-0")
        self.followed: dict[str, list[dict[str, str]]] = {name: [] for name in self.followers}

    def follow(self) -> None:
        for name, follower in self.followers.items():
            while found := follower.read(count=7):
                self.followed[name] += [_fields(fields, self.prefix) for _, fields in found]
            stream = follower.stream
            for entry_id, fields in self.reader.xrange(stream, f"({self.last[name]}", "+"):
                self.last[name] = entry_id.decode()
                self.plain[name].append(_fields(fields, self.prefix))

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        super().commit(rows, meta)
        self.follow()

    def _go_back(self) -> None:
        self.follow()
        super()._go_back()


@pytest.mark.parametrize(("keep", "fail", "silent"), [(5, 40, False), (8, 30, True)])
def test_a_follower_reads_each_dead_letter_and_segment_change_once(
    server: RedisServer, events: Path, keep: int, fail: int, silent: bool
) -> None:
    url = server.url
    steady, prefix = f"once-steady{keep}", f"once-lost{keep}"
    _publish(url, steady, events)
    _run(url, steady, BOTH, FencedRedisStore(url, prefix=steady), SEGMENTS)
    _publish(url, prefix, events)
    store = Followed(url, prefix=prefix, keep=keep, fail=fail, silent=silent)
    _run(url, prefix, BOTH, store, SEGMENTS)
    store.follow()
    assert store.lost and store.commits > fail
    store.reader.close()
    for name, read in store.followed.items():
        expected = _entries(url, steady, name)
        assert expected, name
        # the lost commits' entries were read before the store went back, and appended again
        assert len(store.plain[name]) > len(expected), name
        assert read == expected, name


def test_a_trim_is_lost_with_the_commit_it_belongs_to(server: RedisServer, events: Path) -> None:
    """The store goes back to commit 4 right after commit 9: a trim sent after commit 9 would
    delete the entries of commits 5 to 9, which the store no longer holds."""
    url = server.url
    _publish(url, "trim-steady", events)
    _run(url, "trim-steady", BOTH, FencedRedisStore(url, prefix="trim-steady"), CONFIG)
    _publish(url, "trim-lost", events)
    store = GoesBackInTime(url, prefix="trim-lost", keep=4, fail=9, silent=True)
    _run(url, "trim-lost", BOTH, store, CONFIG, trim=True)
    assert store.lost and store.commits > 9
    lost, steady = _dump(url, "trim-lost"), _dump(url, "trim-steady")
    assert lost.keys() == steady.keys()
    for name in sorted(steady):
        assert lost[name] == steady[name], name
    client = redis.Redis.from_url(url)
    try:  # trimmed all the same: each stream keeps its last entry
        assert [client.xlen(stream_key("trim-lost", p)) for p in (0, 1)] == [1, 1]
    finally:
        client.close()


def test_a_trim_leaves_what_another_group_has_not_acknowledged(
    server: RedisServer, events: Path
) -> None:
    url, prefix = server.url, "trim-audit"
    _publish(url, prefix, events)
    client = redis.Redis.from_url(url)
    stream = stream_key(prefix, 0)
    try:
        client.xgroup_create(stream, "audit", id="0")
        ((_, read),) = client.xreadgroup("audit", "a1", {stream: ">"}, count=5)
        client.xack(stream, "audit", *[entry_id for entry_id, _ in read[:2]])
        _run(url, prefix, Role((0,), None), FencedRedisStore(url, prefix=prefix), CONFIG, trim=True)
        # the audit group's oldest pending entry is the first one left
        ((first, _),) = client.xrange(stream, count=1)
        assert first == read[2][0]
    finally:
        client.close()


@pytest.fixture(scope="module")
def unscoped(server: RedisServer, events: Path) -> dict[str, Any]:
    """The store of an uninterrupted worker without scope."""
    _publish(server.url, "unscoped", events)
    _run(server.url, "unscoped", ALONE, FencedRedisStore(server.url, prefix="unscoped"), CONFIG)
    return _dump(server.url, "unscoped")


class Meanwhile(FencedRedisStore):
    """A store whose third batch commit first lets ``meanwhile`` run (another reader of the
    consumer group at work while this worker stalled), then goes on."""

    def __init__(self, url: str, prefix: str, meanwhile: Callable[[], None]) -> None:
        super().__init__(url, prefix=prefix)
        self.meanwhile, self.commits = meanwhile, 0

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        if self.fence is not None or "checkpoint" in meta:
            self.commits += 1
            if self.commits == 3:
                self.meanwhile()
        super().commit(rows, meta)


def _same_store(url: str, prefix: str, expected: dict[str, Any]) -> None:
    found = _dump(url, prefix)
    assert found.keys() == expected.keys()
    for name in sorted(expected):
        assert found[name] == expected[name], name


def test_a_stalled_worker_without_scope_cannot_commit_after_its_replacement(
    server: RedisServer, events: Path, unscoped: dict[str, Any]
) -> None:
    """The replacement, under the same consumer name (a restart elsewhere), runs to the end
    of the streams while the first worker is stalled in its third commit."""
    url, prefix = server.url, "rival"
    _publish(url, prefix, events)
    rival = _in_process(url, prefix, ALONE, FencedRedisStore(url, prefix=prefix), CONFIG)

    def replace() -> None:
        try:
            rival.run(max_idle_polls=3)
        finally:
            rival.store.close()
            rival.client.close()

    store = Meanwhile(url, prefix, replace)
    with contextlib.suppress(StoreLocked):  # its lease taken over, once its commit failed
        _run(url, prefix, ALONE, store, CONFIG)
    assert store.commits >= 3
    _same_store(url, prefix, unscoped)


class Stalls(RedisWorker):
    """A worker that stalls after reading its third batch, while ``meanwhile`` runs."""

    def __init__(self, meanwhile: Callable[[], None], *args: Any) -> None:
        super().__init__(*args)
        self.meanwhile, self.batches = meanwhile, 0

    def _check_follows(self, *args: Any) -> None:
        super()._check_follows(*args)
        self.batches += 1
        if self.batches == 3:
            self.meanwhile()


def test_a_worker_built_on_a_plain_store_is_fenced(
    server: RedisServer, events: Path, unscoped: dict[str, Any]
) -> None:
    """As the stalled worker above, both built in Python on plain RedisStores."""
    url, prefix = server.url, "plain"
    published = _publish(url, prefix, events)
    rival = _in_process(url, prefix, ALONE, RedisStore(url, prefix=prefix), CONFIG)
    assert isinstance(rival.store, FencedRedisStore)

    def replace() -> None:
        try:
            rival.run(max_idle_polls=3)
        finally:
            rival.client.close()

    plain = RedisStore(url, prefix=prefix)
    first = _in_process(url, prefix, ALONE, plain, CONFIG)  # its options and client
    stalls = Stalls(replace, first.config, plain, first.client, first.options)
    try:
        with contextlib.suppress(StoreLocked):
            stalls.run(max_idle_polls=3)
    finally:
        stalls.client.close()
    assert stalls.batches >= 3
    ckpt = _checkpoint(url, prefix, None)  # not the stalled worker's, on its third batch
    assert ckpt is not None
    assert ckpt.events + ckpt.duplicates + ckpt.dead_letters == published
    _same_store(url, prefix, unscoped)


def test_a_worker_does_not_skip_entries_another_reader_was_delivered(
    server: RedisServer, events: Path, unscoped: dict[str, Any]
) -> None:
    """Another process under the same consumer name reads the next batch of each stream and
    stalls for good: the worker's next batches would start after those entries, which would
    then count as applied. It reads them first instead."""
    url, prefix = server.url, "thief"
    _publish(url, prefix, events)
    client = redis.Redis.from_url(url)

    def steal() -> None:
        for p in ALONE.partitions:
            client.xreadgroup("liveprofile", ALONE.consumer, {stream_key(prefix, p): ">"}, BATCH)

    try:
        _run(url, prefix, ALONE, Meanwhile(url, prefix, steal), CONFIG)
    finally:
        client.close()
    _same_store(url, prefix, unscoped)


def test_two_worker_processes_without_scope_apply_each_event_once(
    server: RedisServer, events: Path, config_file: Path, tmp_path: Path
) -> None:
    """Both under one consumer name: the second takes the first one's lease over, and until
    the first notices (its next renewal) both read and commit; every commit is fenced, so each
    event counts once. Batches are cut where the two happen to read, so only what does not
    depend on the cuts is compared: events per user, and the checkpoint's counters."""
    url, prefix = server.url, "twins"
    published = _publish(url, prefix, events)
    log = tmp_path / "twins.log"
    procs = [_worker(url, prefix, ALONE, config_file, log) for _ in range(2)]
    codes = [p.wait(timeout=TIMEOUT) for p in procs]
    # one may stop, as it must, once it finds its lease taken over (StoreLocked)
    assert 0 in codes and set(codes) <= {0, StoreLocked.exit_code}, log.read_text()
    final = _worker(url, prefix, ALONE, config_file, log)  # whatever is left, if anything
    assert final.wait(timeout=TIMEOUT) == 0, log.read_text()
    store = FencedRedisStore(url, prefix=prefix)
    try:
        counts = {u: decode_profile(b).n for u, b in store.scan("profile")}
    finally:
        store.close()
    assert counts == _expected_counts(events)
    ckpt = _checkpoint(url, prefix, None)
    assert ckpt is not None
    assert ckpt.events + ckpt.duplicates + ckpt.dead_letters == published

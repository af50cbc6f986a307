"""One conformance suite for every feature store (the ``Store`` protocol in liveprofile.store.base).

The checks live in the package (:mod:`liveprofile.checks.store`) so a third-party store can run
them; here every check runs over every backend of ``BACKENDS``, each as a test of its own. To add
a backend, append a :class:`~liveprofile.checks.store.StoreFactory`: how to open a store at a
location derived from the test's ``tmp_path`` (the same location must give the same data),
whether its data outlives ``close()``, and how to remove what a test wrote.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from liveprofile.checks.store import (
    LIFECYCLE_CHECKS,
    STORE_CHECKS,
    StoreFactory,
    check_store,
    run_store_check,
)
from liveprofile.errors import LiveprofileError, StoreError
from liveprofile.redis.store import RedisStore
from liveprofile.store import MemoryStore, SQLiteStore, Store, open_store
from liveprofile.store.base import Rows
from liveprofile.store.scoped import ScopedStore

#: a real Redis server (CI starts one if none runs); db 15 keeps tests apart from other data
REDIS_URL = os.environ.get("LIVEPROFILE_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _redis(tmp: Path) -> Store:
    prefix = "lp-test-" + hashlib.sha1(str(tmp).encode()).hexdigest()[:16]
    return RedisStore(REDIS_URL, prefix=prefix)


def _drop(store: Store) -> None:
    if isinstance(store, RedisStore):
        store.drop()


BACKENDS = {
    "memory": StoreFactory(lambda _: MemoryStore(), persistent=False),
    "sqlite": StoreFactory(lambda tmp: SQLiteStore(tmp / "store" / "profiles.db")),
    "redis": StoreFactory(_redis, drop=_drop),
    "scoped-sqlite": StoreFactory(lambda tmp: ScopedStore(SQLiteStore(tmp / "s.db"), "w1")),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> StoreFactory:
    return BACKENDS[request.param]


def _name(check: Callable[..., None]) -> str:
    return check.__name__.removeprefix("check_")


@pytest.mark.parametrize("check", STORE_CHECKS, ids=_name)
def test_store_check(check: Callable[[Store], None], backend: StoreFactory, tmp_path: Path) -> None:
    run_store_check(check, backend, tmp_path)


@pytest.mark.parametrize("check", LIFECYCLE_CHECKS, ids=_name)
def test_lifecycle_check(
    check: Callable[[StoreFactory, Path], None], backend: StoreFactory, tmp_path: Path
) -> None:
    check(backend, tmp_path)


def test_check_store_runs_the_whole_suite(tmp_path: Path) -> None:
    check_store(BACKENDS["sqlite"], tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {c.__name__ for c in [*STORE_CHECKS, *LIFECYCLE_CHECKS]}


class _ForgetfulStore(MemoryStore):
    """A store that silently drops deletions: the suite must catch it."""

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        kept = {ns: {k: v for k, v in r.items() if v is not None} for ns, r in rows.items()}
        super().commit(kept, meta)


def test_check_store_names_the_check_a_broken_store_fails(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="check_namespaces_are_separate"):
        check_store(StoreFactory(lambda _: _ForgetfulStore(), persistent=False), tmp_path)


class _UnsortedKeysStore(MemoryStore):
    """A store that finds keys under a prefix but not in key order."""

    def keys_under(self, namespace: str, prefixes: Sequence[str]) -> list[list[str]]:
        return [sorted(keys, reverse=True) for keys in super().keys_under(namespace, prefixes)]


class _OldStore:
    """A third-party store written before ``keys_under``: every other operation of a store."""

    def __init__(self) -> None:
        self._inner = MemoryStore()

    def __getattr__(self, name: str) -> Any:
        if name == "keys_under":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_the_suite_requires_finding_keys_under_prefixes(tmp_path: Path) -> None:
    """A store must find the keys of a key-set namespace by prefix, in key order (the links'
    index by target is read so)."""
    with pytest.raises(AssertionError, match="check_keys_under_prefixes"):
        check_store(StoreFactory(lambda _: _UnsortedKeysStore(), persistent=False), tmp_path / "a")
    with pytest.raises(AssertionError, match="check_implements_the_protocol"):
        check_store(StoreFactory(lambda _: _OldStore(), persistent=False), tmp_path / "b")


# -- SQLite specifics --------------------------------------------------------------------------


def test_sqlite_read_only_on_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "profiles.db"
    store = SQLiteStore(path, read_only=True)
    with pytest.raises(StoreError) as info:
        store.setup()
    message = str(info.value)
    assert str(path) in message
    assert "no store" in message and "--store" in message  # says what to do
    assert info.value.exit_code == 74
    assert not path.exists() and not path.parent.exists()  # opening to read creates nothing
    with pytest.raises(StoreError):
        store.read("profile", ["u1"])  # lazy open on first use fails the same way


def test_sqlite_read_only_reads_but_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "profiles.db"
    writer = SQLiteStore(path)
    writer.commit({"profile": {"u1": b"a"}}, {"checkpoint": b"c"})
    reader = SQLiteStore(path, read_only=True)
    try:
        assert reader.read("profile", ["u1", "u2"]) == [b"a", None]
        assert reader.get_meta("checkpoint") == b"c"
        with pytest.raises(StoreError):
            reader.commit({"profile": {"u2": b"b"}}, {})
        # a reader sees new commits of the writer
        writer.commit({"profile": {"u2": b"b"}}, {})
        assert reader.read("profile", ["u2"]) == [b"b"]
    finally:
        reader.close()
        writer.close()


def test_sqlite_read_only_path_with_uri_characters(tmp_path: Path) -> None:
    path = tmp_path / "run#1" / "profiles.db"
    writer = SQLiteStore(path)
    writer.commit({"profile": {"u1": b"a"}}, {})
    writer.close()
    before = sorted(os.listdir(tmp_path))
    reader = SQLiteStore(path, read_only=True)
    try:
        assert reader.read("profile", ["u1"]) == [b"a"]
    finally:
        reader.close()
        assert sorted(os.listdir(tmp_path)) == before


def test_sqlite_setup_on_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match=re.escape("notes.db")):
        SQLiteStore(path).setup()


def test_sqlite_commit_is_one_transaction_for_other_readers(tmp_path: Path) -> None:
    path = tmp_path / "profiles.db"
    store = SQLiteStore(path)
    store.commit({"profile": {f"u{i}": b"x" for i in range(2000)}}, {"checkpoint": b"1"})
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("SELECT count(*) FROM rows WHERE ns='profile'").fetchone() == (2000,)
        assert raw.execute("SELECT value FROM meta WHERE name='checkpoint'").fetchone() == (b"1",)
    finally:
        raw.close()
        store.close()


# -- open_store --------------------------------------------------------------------------------


def test_open_store_memory() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


def test_open_store_sqlite_url(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    store = open_store(f"sqlite://{path}")
    assert isinstance(store, SQLiteStore)
    assert store.path == path and not store.read_only
    store.setup()
    store.commit({"profile": {"u": b"v"}}, {})
    store.close()
    assert path.is_file()
    reader = open_store(f"sqlite://{path}", read_only=True)
    assert isinstance(reader, SQLiteStore) and reader.read_only
    assert reader.read("profile", ["u"]) == [b"v"]
    reader.close()


def test_open_store_plain_path(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "b.db"), read_only=True)
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "b.db" and store.read_only
    with pytest.raises(StoreError):
        store.setup()  # read-only and missing


def test_open_store_redis_url() -> None:
    store = open_store("redis://127.0.0.1:6379/15?prefix=lp-url-test")
    assert isinstance(store, RedisStore) and store.prefix == "lp-url-test"
    assert store.url == "redis://127.0.0.1:6379/15"


def test_redis_down_is_a_store_error() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")  # nothing listens on port 1
    with pytest.raises(StoreError, match="cannot connect"):
        store.setup()


@pytest.mark.parametrize("url", ["postgres://db", "mem://"])
def test_open_store_unknown_scheme(url: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store(url)
    message = str(info.value)
    assert url in message and "memory://" in message and "sqlite:///" in message
    assert "redis://" in message
    assert isinstance(info.value, LiveprofileError)


def test_a_replay_into_redis_equals_one_into_sqlite(tmp_path: Path) -> None:
    from liveprofile import replay
    from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl

    events = tmp_path / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=40, days=5, seed=4), invalid_rate=0.01)
    redis_store = _redis(tmp_path)
    assert isinstance(redis_store, RedisStore)
    url = f"{REDIS_URL}?prefix={redis_store.prefix}"
    try:
        a = replay(events, store=tmp_path / "s.db", progress=False)
        b = replay(events, store=url, dead_letters=tmp_path / "dead.jsonl", progress=False)
        assert (a["events"], a["dead_letters"]) == (b["events"], b["dead_letters"])
        assert a["tasks"] == b["tasks"]
        sqlite_store = SQLiteStore(tmp_path / "s.db")
        for namespace in ("profile", "item", "pending", "dedup"):
            assert dict(sqlite_store.scan(namespace)) == dict(redis_store.scan(namespace))
        sqlite_store.close()
    finally:
        redis_store.drop()
        redis_store.close()

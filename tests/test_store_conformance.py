"""One conformance suite for every feature store (the ``Store`` protocol in liveprofile.store.base).

To add a backend (e.g. Redis), append a :class:`Backend` to ``BACKENDS``: a factory that opens a
store at a location derived from the test's ``tmp_path`` (the same location must give the same
data), and whether its data outlives ``close()``.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveprofile.errors import LiveprofileError, StoreError
from liveprofile.store import MemoryStore, SQLiteStore, Store, open_store
from liveprofile.store.redis import RedisStore
from liveprofile.store.scoped import ScopedStore


@dataclass(frozen=True)
class Backend:
    name: str
    #: opens (without setup) a store whose data lives at a place derived from ``tmp_path``
    open: Callable[[Path], Store]
    #: data survives ``close()`` and a new ``open`` at the same place
    persistent: bool


#: a real Redis server (CI starts one if none runs); db 15 keeps tests apart from other data
REDIS_URL = os.environ.get("LIVEPROFILE_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _redis(tmp: Path) -> Store:
    prefix = "lp-test-" + hashlib.sha1(str(tmp).encode()).hexdigest()[:16]
    return RedisStore(REDIS_URL, prefix=prefix)


BACKENDS = [
    Backend("memory", lambda _: MemoryStore(), persistent=False),
    Backend("sqlite", lambda tmp: SQLiteStore(tmp / "store" / "profiles.db"), persistent=True),
    Backend("redis", _redis, persistent=True),
    Backend("scoped-sqlite", lambda tmp: ScopedStore(SQLiteStore(tmp / "s.db"), "w1"), True),
]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def store(backend: Backend, tmp_path: Path) -> Iterator[Store]:
    s = backend.open(tmp_path)
    s.setup()
    yield s
    if isinstance(s, RedisStore):
        s.drop()
    s.close()


def test_implements_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def test_empty_store(store: Store) -> None:
    assert store.read("profile", ["a", "b"]) == [None, None]
    assert store.read("profile", []) == []
    assert list(store.scan("profile")) == []
    assert store.count("profile") == 0
    assert store.get_meta("checkpoint") is None


def test_setup_is_idempotent(store: Store) -> None:
    store.commit({"profile": {"u1": b"one"}}, {"offset": b"1"})
    store.setup()
    store.setup()
    assert store.read("profile", ["u1"]) == [b"one"]
    assert store.get_meta("offset") == b"1"
    store.commit({"profile": {"u2": b"two"}}, {})
    assert store.count("profile") == 2


def test_read_in_key_order_with_none_for_missing(store: Store) -> None:
    store.commit({"profile": {"b": b"B", "a": b"A", "c": b"C"}}, {})
    assert store.read("profile", ["c", "zz", "a", "b", "a"]) == [b"C", None, b"A", b"B", b"A"]
    assert all(type(v) is bytes for v in store.read("profile", ["a", "b"]))


def test_read_more_keys_than_one_chunk(store: Store) -> None:
    n = 1234  # more than the 500 keys the SQLite store puts in one SELECT
    store.commit({"profile": {f"u{i:05d}": f"v{i}".encode() for i in range(0, n, 2)}}, {})
    keys = [f"u{i:05d}" for i in reversed(range(n))]
    expected = [f"v{i}".encode() if i % 2 == 0 else None for i in reversed(range(n))]
    assert store.read("profile", keys) == expected


def test_namespaces_are_separate(store: Store) -> None:
    store.commit({"profile": {"k": b"p"}, "item": {"k": b"i"}}, {})
    assert store.read("profile", ["k"]) == [b"p"]
    assert store.read("item", ["k"]) == [b"i"]
    assert store.read("pending", ["k"]) == [None]
    store.commit({"item": {"k": None}}, {})
    assert store.read("profile", ["k"]) == [b"p"]
    assert store.count("item") == 0


def test_commit_upserts_and_deletes(store: Store) -> None:
    store.commit({"profile": {"u1": b"a", "u2": b"b", "u3": b"c"}}, {})
    store.commit({"profile": {"u1": b"a2", "u2": None, "u4": b"d", "nobody": None}}, {})
    assert store.read("profile", ["u1", "u2", "u3", "u4", "nobody"]) == [
        b"a2",
        None,
        b"c",
        b"d",
        None,
    ]
    assert store.count("profile") == 3


def test_commit_accepts_empty_and_binary_values(store: Store) -> None:
    blob = bytes(range(256)) * 3
    store.commit({"profile": {"empty": b"", "bin": blob}}, {"ckpt": blob})
    assert store.read("profile", ["empty", "bin"]) == [b"", blob]
    assert store.get_meta("ckpt") == blob
    assert store.count("profile") == 2  # an empty value is a row, not a deletion


def test_meta_blobs(store: Store) -> None:
    store.commit({}, {"model/like": b"m1", "checkpoint": b"c1"})
    store.commit({}, {"model/like": b"m2"})
    assert store.get_meta("model/like") == b"m2"
    assert store.get_meta("checkpoint") == b"c1"
    assert store.get_meta("model/other") is None


def test_scan_in_key_order(store: Store) -> None:
    keys = ["b", "a", "\x1fz", "A", "aa", "é", "a\x1fb", "10", "9"]
    store.commit({"pending": {k: k.encode() for k in keys}, "profile": {"x": b"x"}}, {})
    scanned = list(store.scan("pending"))
    assert scanned == [(k, k.encode()) for k in sorted(keys)]
    assert list(store.scan("nothing")) == []


def test_scan_pages(store: Store) -> None:
    keys = [f"u{i:03d}" for i in range(57)] + ["é", "a\x1fb"]
    store.commit({"member": {k: k.encode() for k in keys}, "profile": {"u000x": b"x"}}, {})
    pages, after = [], None
    while True:
        page = list(store.scan("member", after=after, limit=10))
        if not page:
            break
        assert len(page) <= 10
        pages.append(page)
        after = page[-1][0]
    assert [row for page in pages for row in page] == [(k, k.encode()) for k in sorted(keys)]
    assert len(pages) == 6
    assert list(store.scan("member", after="u050", limit=3)) == [
        (k, k.encode()) for k in ("u051", "u052", "u053")
    ]
    assert list(store.scan("member", after="é")) == []


def test_count(store: Store) -> None:
    store.commit({"profile": {f"u{i}": b"x" for i in range(25)}, "item": {"i": b"y"}}, {})
    store.commit({"profile": {"u0": None, "u1": None, "u1000": b"z"}}, {})
    assert store.count("profile") == 24
    assert store.count("item") == 1
    assert store.count("pending") == 0


def test_failed_commit_changes_nothing(
    store: Store, backend: Backend, request: pytest.FixtureRequest
) -> None:
    store.commit({"profile": {"u1": b"before"}}, {"offset": b"1"})
    bad = {
        "profile": {"u1": b"after", "u2": b"new"},
        "item": {"i1": b"x", "i2": object()},  # unsupported type, after valid rows
    }
    with pytest.raises(StoreError, match="cannot commit"):
        store.commit(bad, {"offset": b"2"})  # type: ignore[dict-item]
    assert store.read("profile", ["u1", "u2"]) == [b"before", None]
    assert store.read("item", ["i1", "i2"]) == [None, None]
    assert store.get_meta("offset") == b"1"
    assert store.count("profile") == 1
    # the store is still usable after a failed commit
    store.commit({"profile": {"u2": b"ok"}}, {"offset": b"3"})
    assert store.read("profile", ["u1", "u2"]) == [b"before", b"ok"]
    assert store.get_meta("offset") == b"3"


def test_failed_meta_write_rolls_back_rows(
    store: Store, backend: Backend, request: pytest.FixtureRequest
) -> None:
    with pytest.raises(StoreError):
        store.commit({"profile": {"u1": b"x"}}, {"ok": b"1", "bad": object()})  # type: ignore[dict-item]
    assert store.read("profile", ["u1"]) == [None]
    assert store.get_meta("ok") is None


def test_data_survives_close_and_reopen(backend: Backend, tmp_path: Path) -> None:
    first = backend.open(tmp_path)
    first.setup()
    first.commit({"profile": {"u1": b"a", "u2": b"b"}}, {"checkpoint": b"c"})
    first.commit({"profile": {"u2": None}}, {})
    first.close()
    again = backend.open(tmp_path)
    again.setup()
    try:
        if backend.persistent:
            assert again.read("profile", ["u1", "u2"]) == [b"a", None]
            assert again.get_meta("checkpoint") == b"c"
            assert list(again.scan("profile")) == [("u1", b"a")]
        else:
            assert again.count("profile") == 0
    finally:
        again.close()


def test_close_twice_is_harmless(backend: Backend, tmp_path: Path) -> None:
    s = backend.open(tmp_path)
    s.setup()
    s.close()
    s.close()


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

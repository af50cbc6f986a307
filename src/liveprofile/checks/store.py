"""The store conformance suite: what every backend of :class:`~liveprofile.store.base.Store`
must do, runnable on a third-party store.

Describe how to open the store with a :class:`StoreFactory` and call :func:`check_store`; or run
the checks one by one (:data:`STORE_CHECKS` take a fresh, set-up store; :data:`LIFECYCLE_CHECKS`
take the factory and a folder), as the project's own tests do.

>>> import tempfile, pathlib
>>> from liveprofile.store import MemoryStore, SQLiteStore
>>> check_store(StoreFactory(lambda folder: MemoryStore(), persistent=False),
...             pathlib.Path(tempfile.mkdtemp()))
>>> check_store(StoreFactory(lambda folder: SQLiteStore(folder / "p.db")),
...             pathlib.Path(tempfile.mkdtemp()))
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveprofile.errors import StoreError
from liveprofile.store.base import Store


@dataclass(frozen=True)
class StoreFactory:
    """How to open the store under test."""

    #: opens (without setup) a store whose data lives at a place derived from the folder; the
    #: same folder must give the same data
    open: Callable[[Path], Store]
    #: data survives ``close()`` and a new ``open`` of the same folder
    persistent: bool = True
    #: removes what a check wrote, before the store is closed (e.g. a server store's keys)
    drop: Callable[[Store], None] | None = None


def _raises(error: type[Exception], call: Callable[[], object], match: str = "") -> None:
    try:
        call()
    except error as exc:
        assert re.search(match, str(exc)), f"{error.__name__} {exc!r} does not match {match!r}"
        return
    raise AssertionError(f"{error.__name__} not raised")


# -- checks on a fresh, set-up store ------------------------------------------------------------


def check_implements_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)


def check_empty_store(store: Store) -> None:
    assert store.read("profile", ["a", "b"]) == [None, None]
    assert store.read("profile", []) == []
    assert list(store.scan("profile")) == []
    assert store.count("profile") == 0
    assert store.get_meta("checkpoint") is None


def check_setup_is_idempotent(store: Store) -> None:
    store.commit({"profile": {"u1": b"one"}}, {"offset": b"1"})
    store.setup()
    store.setup()
    assert store.read("profile", ["u1"]) == [b"one"]
    assert store.get_meta("offset") == b"1"
    store.commit({"profile": {"u2": b"two"}}, {})
    assert store.count("profile") == 2


def check_read_in_key_order_with_none_for_missing(store: Store) -> None:
    store.commit({"profile": {"b": b"B", "a": b"A", "c": b"C"}}, {})
    assert store.read("profile", ["c", "zz", "a", "b", "a"]) == [b"C", None, b"A", b"B", b"A"]
    assert all(type(v) is bytes for v in store.read("profile", ["a", "b"]))


def check_read_more_keys_than_one_chunk(store: Store) -> None:
    n = 1234  # more than the 500 keys the SQLite store puts in one SELECT
    store.commit({"profile": {f"u{i:05d}": f"v{i}".encode() for i in range(0, n, 2)}}, {})
    keys = [f"u{i:05d}" for i in reversed(range(n))]
    expected = [f"v{i}".encode() if i % 2 == 0 else None for i in reversed(range(n))]
    assert store.read("profile", keys) == expected


def check_namespaces_are_separate(store: Store) -> None:
    store.commit({"profile": {"k": b"p"}, "item": {"k": b"i"}}, {})
    assert store.read("profile", ["k"]) == [b"p"]
    assert store.read("item", ["k"]) == [b"i"]
    assert store.read("pending", ["k"]) == [None]
    store.commit({"item": {"k": None}}, {})
    assert store.read("profile", ["k"]) == [b"p"]
    assert store.count("item") == 0


def check_commit_upserts_and_deletes(store: Store) -> None:
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


def check_commit_accepts_empty_and_binary_values(store: Store) -> None:
    blob = bytes(range(256)) * 3
    store.commit({"profile": {"empty": b"", "bin": blob}}, {"ckpt": blob})
    assert store.read("profile", ["empty", "bin"]) == [b"", blob]
    assert store.get_meta("ckpt") == blob
    assert store.count("profile") == 2  # an empty value is a row, not a deletion


def check_meta_blobs(store: Store) -> None:
    store.commit({}, {"model/like": b"m1", "checkpoint": b"c1"})
    store.commit({}, {"model/like": b"m2"})
    assert store.get_meta("model/like") == b"m2"
    assert store.get_meta("checkpoint") == b"c1"
    assert store.get_meta("model/other") is None


def check_model_checkpoints_rewritten_often(store: Store) -> None:
    """A large model checkpoint committed batch after batch (a store may write only what
    changed) reads back as the last one committed, also after a small blob of the same name."""
    from liveprofile.learn.linear import FTRLProximal
    from liveprofile.learn.registry import dump_learner

    model = FTRLProximal(bits=14)
    for n in range(1200):
        model.learn_one({f"f{(n * 7919 + j) % 15000}": 1.0 for j in range(6)}, n % 3 == 0)
    for batch in range(8):
        for n in range(20):
            model.learn_one({f"g{batch}-{n}": 1.0, f"f{n}": 0.5}, n % 2 == 0)
        blob = dump_learner(model)
        store.commit({"profile": {"u": str(batch).encode()}}, {"model/big": blob})
        assert store.get_meta("model/big") == blob, f"model after commit {batch}"
    store.commit({}, {"model/big": b"small"})
    assert store.get_meta("model/big") == b"small"
    store.commit({}, {"model/big": blob})
    assert store.get_meta("model/big") == blob


def check_model_updates_read_back_whole(store: Store) -> None:
    """A store that takes model updates (``writes_model_deltas``, see
    :mod:`liveprofile.learn.tracked`) reads back, after each commit, the learner's whole
    checkpoint, also after a whole blob of the same name; any other store is handed the whole
    checkpoint."""
    from liveprofile.learn.linear import FTRLProximal
    from liveprofile.learn.registry import dump_learner
    from liveprofile.learn.tracked import ModelTracker, model_sink, stage_change

    model, trackers = FTRLProximal(bits=12), dict[str, ModelTracker]()
    sink = model_sink(store)
    for batch in range(12):
        for n in range(15):
            model.learn_one({f"g{batch}-{n}": 1.0, f"f{n}": 0.5}, n % 2 == 0)
        blob = stage_change(sink, trackers, "model/tracked", model)
        assert (blob is None) == (sink is not None)
        store.commit(
            {"profile": {"u": b"%d" % batch}}, {} if blob is None else {"model/tracked": blob}
        )
        assert store.get_meta("model/tracked") == dump_learner(model), f"after commit {batch}"
        if batch == 6:  # another writer's whole blob: the next update is written whole
            store.commit({}, {"model/tracked": b"other"})
            assert store.get_meta("model/tracked") == b"other"


def check_scan_in_key_order(store: Store) -> None:
    keys = ["b", "a", "\x1fz", "A", "aa", "é", "a\x1fb", "10", "9"]
    store.commit({"pending": {k: k.encode() for k in keys}, "profile": {"x": b"x"}}, {})
    scanned = list(store.scan("pending"))
    assert scanned == [(k, k.encode()) for k in sorted(keys)]
    assert list(store.scan("nothing")) == []


def check_scan_pages(store: Store) -> None:
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


def check_keys_under_prefixes(store: Store) -> None:
    """A key-set namespace (``keys:...``, values ``b""``) finds its keys by their start, for
    several prefixes in one call, in key order; it reads, scans and counts as rows do, and
    keys added and removed in one commit are seen by the next call."""
    ns = "keys:check"
    keys = ["1:a:x", "1:a:y", "1:b:x", "2:ab:", "2:ab:z", "1:é:v", "1:a\x1f:w", "10:a"]
    store.commit({ns: dict.fromkeys(keys, b""), "profile": {"1:a:p": b"p"}}, {})
    found = store.keys_under(ns, ["1:a:", "2:ab:", "1:é:", "3:zz:", "1:"])
    assert found == [
        ["1:a:x", "1:a:y"],
        ["2:ab:", "2:ab:z"],
        ["1:é:v"],
        [],
        sorted(k for k in keys if k.startswith("1:")),
    ], found
    assert store.keys_under(ns, []) == []
    assert store.read(ns, ["1:a:x", "1:a:"]) == [b"", None]
    after = [(k, b"") for k in sorted(keys) if k > "1:b:x"][:2]
    assert list(store.scan(ns, after="1:b:x", limit=2)) == after
    assert store.count(ns) == len(keys)
    store.commit({ns: {"1:a:x": None, "1:a:w": b"", "nobody": None}}, {})
    assert store.keys_under(ns, ["1:a:"]) == [["1:a:w", "1:a:y"]]
    assert store.count(ns) == len(keys)
    _raises(StoreError, lambda: store.commit({ns: {"1:a:v": b"value"}}, {}), "key set")
    assert store.keys_under(ns, ["1:a:"]) == [["1:a:w", "1:a:y"]]


def check_keys_under_many_prefixes(store: Store) -> None:
    """Thousands of prefixes in one call, each with its own keys (an index read by a batch)."""
    ns = "keys:many"
    store.commit({ns: {f"t{i:05d}:s{j}": b"" for i in range(0, 3000, 3) for j in range(2)}}, {})
    found = store.keys_under(ns, [f"t{i:05d}:" for i in range(3000)])
    assert found == [[f"t{i:05d}:s0", f"t{i:05d}:s1"] if i % 3 == 0 else [] for i in range(3000)]


def check_count(store: Store) -> None:
    store.commit({"profile": {f"u{i}": b"x" for i in range(25)}, "item": {"i": b"y"}}, {})
    store.commit({"profile": {"u0": None, "u1": None, "u1000": b"z"}}, {})
    assert store.count("profile") == 24
    assert store.count("item") == 1
    assert store.count("pending") == 0


def check_failed_commit_changes_nothing(store: Store) -> None:
    store.commit({"profile": {"u1": b"before"}}, {"offset": b"1"})
    bad: Any = {
        "profile": {"u1": b"after", "u2": b"new"},
        "item": {"i1": b"x", "i2": object()},  # unsupported type, after valid rows
    }
    _raises(StoreError, lambda: store.commit(bad, {"offset": b"2"}), "cannot commit")
    assert store.read("profile", ["u1", "u2"]) == [b"before", None]
    assert store.read("item", ["i1", "i2"]) == [None, None]
    assert store.get_meta("offset") == b"1"
    assert store.count("profile") == 1
    # the store is still usable after a failed commit
    store.commit({"profile": {"u2": b"ok"}}, {"offset": b"3"})
    assert store.read("profile", ["u1", "u2"]) == [b"before", b"ok"]
    assert store.get_meta("offset") == b"3"


def check_failed_meta_write_rolls_back_rows(store: Store) -> None:
    bad_meta: Any = {"ok": b"1", "bad": object()}
    _raises(StoreError, lambda: store.commit({"profile": {"u1": b"x"}}, bad_meta))
    assert store.read("profile", ["u1"]) == [None]
    assert store.get_meta("ok") is None


def check_scoped_commits_register_their_scopes(store: Store) -> None:
    """Workers sharing the store (:class:`~liveprofile.store.scoped.ScopedStore`) can be found:
    a scoped commit with a checkpoint lists its scope, in the same commit, and a failed one
    does not."""
    from liveprofile.store.scoped import ScopedStore, registered_scopes

    assert registered_scopes(store) == {}
    ScopedStore(store, "shop.0").commit({"item": {"i": b"a"}}, {"checkpoint": b"c0"})
    ScopedStore(store, "shop.1").commit({"profile": {"u": b"p"}}, {"other": b"x"})  # no checkpoint
    ScopedStore(store, "shop.1").commit({}, {"checkpoint": b"c1"})
    ScopedStore(store, "shop.0").commit({}, {"checkpoint": b"c2"})
    assert registered_scopes(store) == {"shop.0": b"c2", "shop.1": b"c1"}
    bad: Any = {"item": {"i": object()}}
    _raises(StoreError, lambda: ScopedStore(store, "shop.2").commit(bad, {"checkpoint": b"c"}))
    assert sorted(registered_scopes(store)) == ["shop.0", "shop.1"]
    assert store.read("item@shop.0", ["i"]) == [b"a"]


#: checks that take a fresh store, set up
STORE_CHECKS: list[Callable[[Store], None]] = [
    check_implements_the_protocol,
    check_empty_store,
    check_setup_is_idempotent,
    check_read_in_key_order_with_none_for_missing,
    check_read_more_keys_than_one_chunk,
    check_namespaces_are_separate,
    check_commit_upserts_and_deletes,
    check_commit_accepts_empty_and_binary_values,
    check_meta_blobs,
    check_model_checkpoints_rewritten_often,
    check_model_updates_read_back_whole,
    check_scan_in_key_order,
    check_scan_pages,
    check_keys_under_prefixes,
    check_keys_under_many_prefixes,
    check_count,
    check_failed_commit_changes_nothing,
    check_failed_meta_write_rolls_back_rows,
    check_scoped_commits_register_their_scopes,
]


# -- checks of opening and closing --------------------------------------------------------------


def check_data_survives_close_and_reopen(factory: StoreFactory, folder: Path) -> None:
    first = factory.open(folder)
    first.setup()
    first.commit({"profile": {"u1": b"a", "u2": b"b"}}, {"checkpoint": b"c"})
    first.commit({"profile": {"u2": None}}, {})
    first.close()
    again = factory.open(folder)
    again.setup()
    try:
        if factory.persistent:
            assert again.read("profile", ["u1", "u2"]) == [b"a", None]
            assert again.get_meta("checkpoint") == b"c"
            assert list(again.scan("profile")) == [("u1", b"a")]
        else:
            assert again.count("profile") == 0
    finally:
        if factory.drop is not None:
            factory.drop(again)
        again.close()


def check_close_twice_is_harmless(factory: StoreFactory, folder: Path) -> None:
    s = factory.open(folder)
    s.setup()
    s.close()
    s.close()


#: checks that take the factory and a folder of their own
LIFECYCLE_CHECKS: list[Callable[[StoreFactory, Path], None]] = [
    check_data_survives_close_and_reopen,
    check_close_twice_is_harmless,
]


def run_store_check(check: Callable[[Store], None], factory: StoreFactory, folder: Path) -> None:
    """Run one of :data:`STORE_CHECKS` on a fresh store opened in ``folder``."""
    store = factory.open(folder)
    store.setup()
    try:
        check(store)
    finally:
        if factory.drop is not None:
            factory.drop(store)
        store.close()


def check_store(factory: StoreFactory, folder: Path) -> None:
    """Run every check, each on a store of its own under ``folder`` (an empty folder); raises
    :class:`AssertionError` naming the first check that fails."""
    for check in STORE_CHECKS:
        try:
            run_store_check(check, factory, folder / check.__name__)
        except AssertionError as exc:
            raise AssertionError(f"{check.__name__}: {exc}") from exc
    for lifecycle in LIFECYCLE_CHECKS:
        try:
            lifecycle(factory, folder / lifecycle.__name__)
        except AssertionError as exc:
            raise AssertionError(f"{lifecycle.__name__}: {exc}") from exc

"""The identity links' index by target gives what a scan of the links gives, on every store.

Random tangled streams (``engine_streams``: logins back and forth, operator merges, erasures,
expiry, duplicates, late and malformed records) replay batch by batch through the local runner
into SQLite, the memory store and a real Redis (a prefix of its own on the shared server), with
restarts between batches; after every batch the store's index holds exactly one key per link,
and the links found through it to every id are those a full scan of the links finds. A store
written before the index (its checkpoint of schema 1, links without keys) opens, is indexed by
the first batch that needs it, and answers as one written with the index.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from engine_streams import DAY, IDS, LATENESS, T0, stream
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from test_state_properties import write

from liveprofile.config import PipelineConfig, RunConfig
from liveprofile.engine.linkindex import LinkIndex, LinkMap, find_links_to
from liveprofile.engine.local import LocalRunner
from liveprofile.events.sources import JsonlSource
from liveprofile.profile.identity import MAX_ALIASES
from liveprofile.redis.store import RedisStore
from liveprofile.store.base import Store
from liveprofile.store.layout import (
    ALIASES,
    CHECKPOINT,
    LINKS_BY_TARGET,
    check_config,
    decode_checkpoint,
    encode_checkpoint,
    link_index_key,
    links_indexed,
)
from liveprofile.store.memory import MemoryStore
from liveprofile.store.sqlite import SQLiteStore

REDIS = "redis://127.0.0.1:6379/0"
STORES = ("sqlite", "memory", "redis")
FEW = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate],
    print_blob=True,
)


@contextlib.contextmanager
def opened(kind: str, folder: Path) -> Iterator[tuple[Any, Any]]:
    """A fresh store of ``kind`` and a function that opens it again (the same data)."""
    if kind == "sqlite":
        yield SQLiteStore(folder / "state.db"), lambda: SQLiteStore(folder / "state.db")
    elif kind == "memory":
        memory = MemoryStore()
        yield memory, lambda: memory
    else:
        prefix = f"lp-linkindex-{uuid.uuid4().hex}"
        store = RedisStore(REDIS, prefix=prefix)
        try:
            yield store, lambda: RedisStore(REDIS, prefix=prefix)
        finally:
            store.drop()
            store.close()


#: operations of ``engine_streams.stream``, most of them logins, merges and erasures
LINK_KINDS = ("login", "login", "login", "login", "merge", "merge", "forget", "view", "view")
LINK_KINDS += ("purchase", "late", "dup", "bad")


def link_op() -> st.SearchStrategy[tuple[str, int, int, int, float, float, int]]:
    """One operation of a stream that links, re-points and removes links often."""
    return st.tuples(
        st.sampled_from(LINK_KINDS),
        st.integers(0, len(IDS) - 1),
        st.integers(0, len(IDS) - 1),
        st.integers(0, 5),
        st.sampled_from([0.0, 1.0, 1800.0, 7200.0, 30_000.0, DAY]),
        st.sampled_from([0.0, 0.0, 600.0, LATENESS - 60.0]),
        st.integers(0, 5),
    )


def scanned_links_to(links: dict[str, str], who: str) -> dict[str, str]:
    """The links leading to ``who``, directly or through linked ids, from all the links."""
    found: dict[str, str] = {}
    targets = {who}
    while targets:
        hits = {s: t for s, t in links.items() if t in targets and s not in found}
        found.update(hits)
        targets = set(hits)
    return found


def check_index(store: Store) -> None:
    """One key per link in the index, and for every id the links found through the index are
    those a scan finds."""
    links = {s: t.decode() for s, t in store.scan(ALIASES)}
    keys = [k for k, _ in store.scan(LINKS_BY_TARGET)]
    assert sorted(keys) == sorted(link_index_key(t, s) for s, t in links.items())
    for who in sorted({*IDS, *links, *links.values()}):
        assert find_links_to(store, {who}, LinkIndex()) == scanned_links_to(links, who), who
    every = set(IDS) | set(links.values())
    expected = {s: t for who in every for s, t in scanned_links_to(links, who).items()}
    assert find_links_to(store, every, LinkIndex()) == expected


def replay_checked(
    config: PipelineConfig, lines: list[bytes], kind: str, sizes: list[int], restarts: set[int]
) -> None:
    """Replay ``lines`` in batches of ``sizes`` into a store of ``kind``, checking the index
    after every batch, with a new runner after the batch numbers in ``restarts``."""
    with tempfile.TemporaryDirectory() as tmp, opened(kind, Path(tmp)) as (store, reopen):
        source = write(Path(tmp), lines)
        src, end = JsonlSource(source, commands=True), source.stat().st_size
        store.setup()
        check_config(store, config)
        runner = LocalRunner(config, store, Path(tmp) / "dead.jsonl", now=lambda: 1.8e9)
        try:
            k = 0
            while (offset := runner.state.checkpoint.offsets.get(src.name, 0)) < end:
                with contextlib.closing(src.batches(offset, sizes[k % len(sizes)])) as batches:
                    runner.process(src.name, next(batches))
                check_index(store)
                k += 1
                if k in restarts:
                    runner.close()
                    store = reopen()
                    runner = LocalRunner(config, store, Path(tmp) / "dead.jsonl", now=lambda: 1.8e9)
        finally:
            runner.close()


def _config(ttl: str) -> PipelineConfig:
    return PipelineConfig(run=RunConfig(profile_ttl=ttl, hot_profiles=1))


@pytest.mark.parametrize("kind", STORES)
@FEW
@given(
    ops=st.lists(link_op(), min_size=1, max_size=40),
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    restarts=st.sets(st.integers(1, 8), max_size=2),
    ttl=st.sampled_from(["", "1d", "6h"]),
)
def test_the_index_finds_what_a_scan_finds_after_every_batch(
    kind: str, ops: list[Any], sizes: list[int], restarts: set[int], ttl: str
) -> None:
    replay_checked(_config(ttl), stream(ops), kind, sizes, restarts)


def _line(k: int, **fields: Any) -> bytes:
    return msgspec.json.encode({"event_id": f"e{k}", "ts": T0 + k, **fields})


@pytest.mark.parametrize("kind", STORES)
def test_more_visitors_than_an_alias_list_keeps_then_a_merge_and_an_erasure(kind: str) -> None:
    """Links beyond the ``MAX_ALIASES`` a profile keeps are indexed too; a ``$merge`` re-points
    them all, an erasure removes them all."""
    n = MAX_ALIASES + 5
    lines = [_line(k, user_id="u1", anonymous_id=f"v{k}", type="view") for k in range(n)]
    lines.append(_line(n, user_id="u2", type="view"))
    lines.append(_line(n + 1, user_id="u2", anonymous_id="u1", type="$merge"))
    lines.append(_line(n + 2, user_id="u2", type="$forget"))
    replay_checked(_config(""), lines, kind, [7, 30], {2})


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_store_written_before_the_index_is_indexed_when_first_needed(kind: str) -> None:
    """A store of schema 1 (links, no index) answers at once: its first batch that erases,
    merges or may expire users scans the links and indexes them in its commit, which raises
    the schema; the end state is the one of a store written with the index throughout."""
    n = MAX_ALIASES + 3
    first = [_line(k, user_id=f"u{k % 3}", anonymous_id=f"v{k}", type="view") for k in range(n)]
    later = [
        _line(n, user_id="u0", type="$forget"),
        _line(n + 1, user_id="u2", anonymous_id="u1", type="$merge"),
        _line(n + 2, user_id="u2", anonymous_id="w1", type="view"),
    ]
    config = _config("")
    with tempfile.TemporaryDirectory() as tmp, opened(kind, Path(tmp)) as (store, reopen):
        folder = Path(tmp)
        replay_checked_into(config, first, store, folder)
        _as_written_before_the_index(store)
        assert not links_indexed(decode_checkpoint(store.get_meta(CHECKPOINT)))
        old = reopen()
        replay_checked_into(config, first + later, old, folder)
        ckpt = decode_checkpoint(old.get_meta(CHECKPOINT))
        assert links_indexed(ckpt) and ckpt.schema == 2
        check_index(old)
        with opened("memory", folder) as (fresh, _):
            replay_checked_into(config, first + later, fresh, folder / "fresh")
            assert sorted(fresh.scan(ALIASES)) == sorted(old.scan(ALIASES))
            assert sorted(fresh.scan(LINKS_BY_TARGET)) == sorted(old.scan(LINKS_BY_TARGET))


def replay_checked_into(
    config: PipelineConfig, lines: list[bytes], store: Any, folder: Path
) -> None:
    """Replay ``lines`` (from their start, or where the store's checkpoint stopped) in batches
    of 20."""
    folder.mkdir(parents=True, exist_ok=True)
    source = write(folder, lines)
    src, end = JsonlSource(source, commands=True), source.stat().st_size
    store.setup()
    check_config(store, config)
    runner = LocalRunner(config, store, folder / "dead.jsonl", now=lambda: 1.8e9)
    try:
        while (offset := runner.state.checkpoint.offsets.get(src.name, 0)) < end:
            with contextlib.closing(src.batches(offset, 20)) as batches:
                runner.process(src.name, next(batches))
    finally:
        runner.close()


def _as_written_before_the_index(store: Any) -> None:
    """Make ``store`` what a version before the index wrote: no index keys, schema 1."""
    keys = [k for k, _ in store.scan(LINKS_BY_TARGET)]
    assert keys, "the links were indexed"
    ckpt = decode_checkpoint(store.get_meta(CHECKPOINT))
    ckpt.schema = 1
    store.commit({LINKS_BY_TARGET: dict.fromkeys(keys)}, {CHECKPOINT: encode_checkpoint(ckpt)})


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["set", "del", "pop", "update", "setdefault", "popitem", "ior"]),
            st.sampled_from(IDS),
            st.sampled_from(IDS),
        ),
        max_size=60,
    )
)
def test_the_links_a_state_holds_know_their_sources(ops: list[tuple[str, str, str]]) -> None:
    """:class:`LinkMap` is the ``dict`` it stands for after any changes, and knows for every
    id the ids linked to it."""
    links, plain = LinkMap(), {}
    for kind, source, target in ops:
        for d in (links, plain):
            if kind == "set":
                d[source] = target
            elif kind == "del" and source in d:
                del d[source]
            elif kind == "pop":
                d.pop(source, None)
            elif kind == "update":
                d.update({source: target, target: source})
            elif kind == "setdefault":
                d.setdefault(source, target)
            elif kind == "popitem" and d:
                d.popitem()
            elif kind == "ior":
                d |= {source: target}
        assert links == plain
        for who in IDS:
            assert links.sources_of(who) == {s for s, t in plain.items() if t == who}


def test_a_store_kept_per_partition_finds_the_keys_of_every_partition() -> None:
    from liveprofile.serving.partitions import PartitionedView
    from liveprofile.store.layout import Checkpoint
    from liveprofile.store.scoped import ScopedStore

    shared = MemoryStore()
    for scope, source in (("p0", "v1"), ("p1", "v2"), ("p1", "v0")):
        rows = {LINKS_BY_TARGET: {link_index_key("u1", source): b""}}
        ScopedStore(shared, scope).commit(rows, {CHECKPOINT: encode_checkpoint(Checkpoint())})
    view = PartitionedView(shared)
    assert view.keys_under(LINKS_BY_TARGET, ["2:u1:", "2:u2:"]) == [
        ["2:u1:v0", "2:u1:v1", "2:u1:v2"],
        [],
    ]


def test_a_store_without_links_written_before_the_index_is_marked_indexed() -> None:
    """The first batch that needs the index of a schema-1 store with no links raises the
    schema too (nothing to index), so later batches read the (empty) index."""
    config = _config("")
    with tempfile.TemporaryDirectory() as tmp, opened("sqlite", Path(tmp)) as (store, reopen):
        folder = Path(tmp)
        first = [_line(0, user_id="u0", type="view")]
        replay_checked_into(config, first, store, folder)
        ckpt = decode_checkpoint(store.get_meta(CHECKPOINT))
        ckpt.schema = 1
        store.commit({}, {CHECKPOINT: encode_checkpoint(ckpt)})
        store.close()
        old = reopen()
        replay_checked_into(config, [*first, _line(1, user_id="u0", type="$forget")], old, folder)
        assert decode_checkpoint(old.get_meta(CHECKPOINT)).schema == 2
        assert old.count(ALIASES) == 0 and old.count(LINKS_BY_TARGET) == 0

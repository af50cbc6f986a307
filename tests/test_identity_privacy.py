"""Identity merge, privacy export and erasure, and profile expiry (TTL)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
import pytest
import redis
from cli_server import CliServer
from hypothesis import given, settings
from hypothesis import strategies as st
from test_step_by_hand import profile_after

from liveprofile.api import check_config, default_changes
from liveprofile.config import PipelineConfig, ProfileConfig
from liveprofile.engine.changes import read_changes
from liveprofile.engine.local import LocalRunner
from liveprofile.events import Event
from liveprofile.events.schema import encode_event
from liveprofile.events.sources import JsonlSource
from liveprofile.privacy import erase, export_user
from liveprofile.profile.identity import merge_profiles
from liveprofile.profile.state import DAY, decode_profile
from liveprofile.redis.changes import change_stream, read_stream_changes
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.sqlite import SQLiteStore

REDIS = "redis://127.0.0.1:6379/0"
START = 1_700_006_400.0
CONFIG = """
[run]
batch_size = 3
[segments]
tea_lovers = "interest['tea'] > 2"
buyers = "frequency >= 1"
"""

event_st = st.builds(
    lambda k, t, day, cat, value: (k, t, START + day * DAY, cat, value),
    st.integers(0, 1),
    st.sampled_from(["view", "purchase", "cart"]),
    st.floats(0, 120, allow_nan=False),
    st.sampled_from(["tea", "cake", "milk", None]),
    st.one_of(st.none(), st.floats(0.5, 50, allow_nan=False)),
)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def test_a_merge_under_the_top_k_keeps_every_interest() -> None:
    # three interests under a top 4: none is cut (a slice by ``len - top_k`` once cut two)
    events = [
        Event(f"e{i}", user, "view", START + i, item_id=f"i{i}", category=cat)
        for i, (user, cat) in enumerate([("u", "tea"), ("anon", "cups"), ("anon", "books")])
    ]
    updater, known = profile_after(events[:1], "u", profile=ProfileConfig(top_k=4))
    _, anon = profile_after(events[1:], "anon", profile=ProfileConfig(top_k=4))
    merge_profiles(updater, known, anon)
    assert len(known.interests) == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=30))
def test_merged_profile_equals_one_profile_of_all_events(rows: list[tuple]) -> None:
    profile = ProfileConfig(top_k=64)
    events = [
        Event(f"e{i}", "u", t, ts, item_id=f"i{i}", category=cat, value=v)
        for i, (_, t, ts, cat, v) in enumerate(rows)
    ]
    updater, whole = profile_after(events, "u", profile=profile)
    parts = []
    for k, name in enumerate(("u", "anon")):  # the events of each id, each id's profile
        mine = [
            msgspec.structs.replace(e, user=name)
            for (j, *_), e in zip(rows, events, strict=True)
            if j == k
        ]
        parts.append(
            profile_after(mine, name, profile=profile)[1] if mine else updater.new(name, START)
        )
    known, anon = parts
    merge_profiles(updater, known, anon)
    assert known.n == whole.n and known.counts == whole.counts
    assert (known.first_ts, known.last_ts) == (whole.first_ts, whole.last_ts)
    assert (known.purchases, known.last_purchase_ts) == (whole.purchases, whole.last_purchase_ts)
    assert close(known.monetary, whole.monetary)
    assert known.spend == whole.spend
    assert known.recent == whole.recent
    assert (known.v_events, known.v_purchases, known.v_items) == (
        whole.v_events,
        whole.v_purchases,
        whole.v_items,
    )
    later = whole.last_ts + 3 * DAY
    for a, b in (
        (updater.decayed_counts(known, later), updater.decayed_counts(whole, later)),
        (updater.interests_at(known, later), updater.interests_at(whole, later)),
    ):
        assert set(a) == set(b) and all(close(a[k], b[k]) for k in a)
    if any(k == 1 for k, *_ in rows):
        assert known.aliases == ["anon"]


def _write(path: Path, events: list[Event]) -> Path:
    path.write_bytes(b"".join(encode_event(e) + b"\n" for e in events))
    return path


def _replay(events: Path, store: Path, config: PipelineConfig) -> None:
    backend = SQLiteStore(store)
    backend.setup()
    check_config(backend, config)
    runner = LocalRunner(
        config, backend, store.with_suffix(".dead"), changes=default_changes(store)
    )
    try:
        runner.run(JsonlSource(events))
    finally:
        runner.close()


def _rows(store: Path, namespace: str) -> dict[str, bytes]:
    backend = SQLiteStore(store, read_only=True)
    try:
        return dict(backend.scan(namespace))
    finally:
        backend.close()


def _visit(
    i: int, anon: str | None, user: str | None, kind: str, day: float, **kw: object
) -> Event:
    who = user if user is not None else anon
    assert who is not None
    return Event(f"v{i}", who, kind, START + day * DAY, anonymous_id=anon, **kw)  # type: ignore[arg-type]


def test_login_merges_the_visitor_and_later_events_land_on_the_user(tmp_path: Path) -> None:
    events = [
        _visit(0, "anon-1", None, "view", 0.0, category="tea", item_id="t1"),
        _visit(1, "anon-1", None, "view", 0.1, category="tea", item_id="t2"),
        _visit(2, "anon-1", None, "cart", 0.2, category="tea", item_id="t2"),
        _visit(3, None, "ann", "view", 0.3, category="cake", item_id="c1"),
        _visit(4, "anon-1", "ann", "purchase", 0.4, category="tea", item_id="t2", value=9.0),
        _visit(5, "anon-1", None, "view", 0.5, category="tea", item_id="t3"),
        _visit(6, "anon-2", None, "view", 0.6, category="milk", item_id="m1"),
    ]
    config = PipelineConfig.from_toml(CONFIG)
    store = tmp_path / "s.db"
    _replay(_write(tmp_path / "ev.jsonl", events), store, config)
    profiles = {u: decode_profile(b) for u, b in _rows(store, "profile").items()}
    assert sorted(profiles) == ["ann", "anon-2"]
    ann = profiles["ann"]
    assert ann.n == 6 and ann.counts == {"view": 4, "cart": 1, "purchase": 1}
    assert ann.first_ts == START and ann.aliases == ["anon-1"]
    assert _rows(store, "alias") == {"anon-1": b"ann"}
    # the visitor's tea interest went into the merged profile: 3 views + cart + purchase
    assert _rows(store, "segment:tea_lovers").keys() == {"ann"}
    changes = read_changes(tmp_path / "s.db.segments.jsonl")
    assert ("tea_lovers", "anon-1", "exit") in {
        (c["segment"], c["user_id"], c["change"]) for c in changes
    }

    exported = export_user(store, "ann")
    assert exported["stored"]["aliases"] == ["anon-1"]
    assert set(exported["segments"]) == {"tea_lovers", "buyers"}
    assert {c["user_id"] for c in exported["segment_changes"]} == {"ann", "anon-1"}
    assert export_user(store, "anon-1")["linked_to"] == "ann"


def test_erasure_removes_profile_links_memberships_and_changes(tmp_path: Path) -> None:
    events = [_visit(i, "anon-1", None, "view", i / 100, category="tea") for i in range(3)]
    events += [
        _visit(3, "anon-1", "ann", "purchase", 0.1, category="tea", item_id="t1", value=3.0),
        _visit(4, None, "bob", "purchase", 0.2, category="tea", item_id="t1", value=4.0),
        _visit(5, None, "ann", "view", 0.3, category="tea", item_id="t2"),
    ]
    config = PipelineConfig.from_toml(CONFIG)
    store = tmp_path / "s.db"
    _replay(_write(tmp_path / "ev.jsonl", events), store, config)
    assert {c["user_id"] for c in read_changes(tmp_path / "s.db.segments.jsonl")} >= {
        "ann",
        "anon-1",
    }

    out = subprocess.run(
        [sys.executable, "-m", "liveprofile.cli", "privacy", "delete", "ann", "nobody",
         "--store", str(store)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "erased", "erased": ["ann"], "unknown": ["nobody"]}
    assert set(_rows(store, "profile")) == {"bob"}
    assert _rows(store, "alias") == {}
    for segment in ("tea_lovers", "buyers"):
        assert "ann" not in _rows(store, f"segment:{segment}")
    assert "bob" in _rows(store, "segment:buyers")
    left = {c["user_id"] for c in read_changes(tmp_path / "s.db.segments.jsonl")}
    assert left == {"bob"}
    with pytest.raises(Exception, match="nothing is stored about user 'ann'"):
        export_user(store, "ann")
    # a later event of the same person starts a new profile
    _replay(_write(tmp_path / "more.jsonl", [_visit(9, None, "ann", "view", 1.0)]), store, config)
    assert decode_profile(_rows(store, "profile")["ann"]).n == 1


def test_erasure_over_http_needs_the_write_token(tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(CONFIG)
    store = tmp_path / "s.db"
    events = [_visit(0, None, "ann", "purchase", 0.0, category="tea", item_id="t", value=3.0)]
    _replay(_write(tmp_path / "ev.jsonl", events), store, config)
    env = {"LIVEPROFILE_READ_TOKEN": "r", "LIVEPROFILE_WRITE_TOKEN": "w"}
    server = CliServer(["serve", "--store", str(store)], env, tmp_path / "log")
    try:
        read, write = {"Authorization": "Bearer r"}, {"Authorization": "Bearer w"}
        exported = server.client.get("/v1/profiles/ann/export", headers=read)
        assert exported.status_code == 200 and exported.json()["segments"].keys() == {
            "buyers",
            "tea_lovers",
        }
        assert server.client.delete("/v1/profiles/ann", headers=read).status_code == 401
        done = server.client.delete("/v1/profiles/ann", headers=write)
        assert done.status_code == 200 and done.json()["erased"] == ["ann"]
        assert server.client.get("/v1/profiles/ann", headers=read).status_code == 404
        assert server.client.get("/v1/profiles/ann/export", headers=read).status_code == 404
        members = server.client.get("/v1/segments/buyers/members", headers=read).json()
        assert members["members"] == []
    finally:
        server.stop()


def test_erasure_through_the_redis_stream(tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(CONFIG)
    prefix = f"priv-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS)
    store = RedisStore(REDIS, prefix=prefix)
    events = [
        _visit(0, "anon-1", None, "view", 0.0, category="tea", item_id="t1"),
        _visit(1, "anon-1", "ann", "purchase", 0.1, category="tea", item_id="t1", value=3.0),
        _visit(2, None, "bob", "purchase", 0.2, category="tea", item_id="t1", value=4.0),
    ]
    try:
        publish(client, prefix, 2, [encode_event(e) for e in events])
        worker = RedisWorker(
            config, store, client, WorkerOptions(prefix, [0, 1], batch_size=2, block_ms=50)
        )
        worker.run(max_idle_polls=2)
        url = f"{REDIS}?prefix={prefix}"
        assert set(export_user(url, "ann")["segments"]) == {"buyers", "tea_lovers"}
        queued = erase(url, ["ann"])
        assert queued["status"] == "queued"
        assert {c["user_id"] for _, c in read_stream_changes(client, change_stream(prefix))} >= {
            "ann"
        }
        worker.run(max_idle_polls=2)
        assert store.read("profile", ["ann", "bob"])[0] is None
        assert store.read("alias", ["anon-1"]) == [None]
        streamed = {c["user_id"] for _, c in read_stream_changes(client, change_stream(prefix))}
        assert streamed == {"bob"}
    finally:
        store.drop()
        store.close()
        client.close()


def test_idle_profiles_expire_after_the_ttl(tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(
        '[run]\nbatch_size = 4\nprofile_ttl = "3d"\n[segments]\nany = "events >= 1"\n'
    )
    events = [_visit(0, "anon-1", None, "view", 0.0), _visit(1, "anon-1", "old", "view", 0.1)]
    events += [_visit(10 + d, None, "busy", "view", d + 0.5) for d in range(12)]
    events += [_visit(99, None, "old", "view", 11.9)]
    store = tmp_path / "s.db"
    _replay(_write(tmp_path / "ev.jsonl", events), store, config)
    profiles = {u: decode_profile(b) for u, b in _rows(store, "profile").items()}
    assert sorted(profiles) == ["busy", "old"]
    assert profiles["old"].n == 1  # came back after expiring: a new profile
    assert profiles["old"].first_ts == START + 11.9 * DAY
    assert _rows(store, "alias") == {}  # the link went with the expired profile
    changes = [(c["user_id"], c["change"]) for c in read_changes(tmp_path / "s.db.segments.jsonl")]
    assert changes.count(("old", "exit")) == 1 and changes.count(("old", "enter")) == 2
    # the last-seen index keeps only days that can still expire
    days = {int(key.split(":")[0]) for key in _rows(store, "expiry")}
    assert min(days) >= int((START + 11.9 * DAY - 3 * DAY) // DAY) - 1


def test_expiry_does_not_depend_on_batch_boundaries(tmp_path: Path) -> None:
    events = [_visit(i, None, f"u{i % 7}", "view", i * 0.9, category="tea") for i in range(40)]
    path = _write(tmp_path / "ev.jsonl", events)
    results = []
    for size in (1, 5, 40):
        config = PipelineConfig.from_toml(f'[run]\nbatch_size = {size}\nprofile_ttl = "4d"\n')
        store = tmp_path / f"s{size}.db"
        _replay(path, store, config)
        results.append(
            {u: msgspec.msgpack.decode(b[1:]) for u, b in _rows(store, "profile").items()}
        )
    assert results[0] == results[1] == results[2]

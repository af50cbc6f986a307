"""Real-time segments: rules, membership, change events, paging and exports."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import msgspec
import pytest
import redis
from cli_server import CliServer
from test_step_by_hand import profile_after

from liveprofile.api import check_config
from liveprofile.config import PipelineConfig, ProfileConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.engine.changes import read_changes
from liveprofile.engine.local import LocalRunner
from liveprofile.errors import ConfigError
from liveprofile.events import Event
from liveprofile.events.schema import encode_event
from liveprofile.events.sources import JsonlSource
from liveprofile.profile.segments import SegmentRules
from liveprofile.profile.state import DAY, ProfileUpdater, decode_profile
from liveprofile.redis.changes import change_stream, read_stream_changes
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.serving.segments import segment_members
from liveprofile.store.sqlite import SQLiteStore

REDIS = "redis://127.0.0.1:6379/0"
SEGMENTS = """
[run]
batch_size = 500
[features]
bits = 14
[segments]
buyers = "frequency >= 3"
hot = "score.convert > 0.15"
recent_spenders = "monetary_30d > 50 and days_since_last_purchase < 2"
"""
#: rules whose value changes only with the user's own events
EVENT_DRIVEN = {
    "buyers": lambda v: v["frequency"] >= 3,
    "hot": lambda v: v["scores"].get("convert", 0.0) > 0.15,
}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seg") / "events.jsonl"
    write_jsonl(path, SyntheticConfig(users=120, days=10, seed=5), duplicate_rate=0.01)
    return path


def _run(config: PipelineConfig, events: Path, store: Path, limit: int | None = None) -> None:
    backend = SQLiteStore(store)
    backend.setup()
    check_config(backend, config)
    runner = LocalRunner(config, backend, store.with_suffix(".dead"))
    try:
        runner.run(JsonlSource(events), limit=limit)
    finally:
        runner.close()


def _members(store: Path, name: str) -> set[str]:
    backend = SQLiteStore(store, read_only=True)
    try:
        return {user for user, _ in backend.scan(f"segment:{name}")}
    finally:
        backend.close()


def _fold(changes: list[dict[str, object]]) -> dict[str, set[str]]:
    """Members per segment after applying the change events in order."""
    members: dict[str, set[str]] = defaultdict(set)
    for c in changes:
        segment, user = str(c["segment"]), str(c["user_id"])
        if c["change"] == "enter":
            assert user not in members[segment], c  # an enter always follows an exit
            members[segment].add(user)
        else:
            assert user in members[segment], c
            members[segment].discard(user)
    return members


def test_rules_read_profile_fields_as_of_the_given_time() -> None:
    events = [
        Event("e1", "u1", "purchase", 0.0, category="Dairy", value=150.0),
        Event("e2", "u1", "purchase", 5 * DAY, category="Bakery", value=80.0),
    ]
    updater, p = profile_after(events)
    rules = SegmentRules(
        {
            "vip": "monetary_90d > 200 and days_since_last_purchase < 14",
            "dairy": "interest['Dairy'] > 0.5",
            "likely": "score.purchase > 0.7",
        },
        updater,
    )
    assert rules.memberships(p, at=5 * DAY) == ["dairy", "vip"]
    assert rules.memberships(p, at=20 * DAY) == ["dairy"]  # the last purchase is 15 days old
    assert rules.memberships(p, at=100 * DAY) == []  # spend left the window; interest decayed
    p.scores["purchase"] = 0.9
    assert rules.memberships(p, at=100 * DAY) == ["likely"]
    assert rules.explain(p, at=5 * DAY)["vip"] is True


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("monetary >", "cannot parse"),
        ("__import__('os')", "only log, sqrt, min, max, abs can be called"),
        ("spend > 3", "'spend' is not allowed"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(rule: str, message: str) -> None:
    with pytest.raises(ConfigError, match="segment 'x'") as info:
        SegmentRules({"x": rule}, ProfileUpdater(ProfileConfig()))
    assert message in str(info.value)


def test_change_events_add_up_to_the_members_in_the_store(events: Path, tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(SEGMENTS)
    store = tmp_path / "s.db"
    _run(config, events, store)
    changes = read_changes(store.with_suffix(".segments.jsonl"))
    assert {c["change"] for c in changes} == {"enter", "exit"}
    folded = _fold(changes)
    backend = SQLiteStore(store, read_only=True)
    profiles = {u: decode_profile(b) for u, b in backend.scan("profile")}
    updater = ProfileUpdater(config.profile)
    watermark = max(p.last_ts for p in profiles.values())
    for name in config.segments:
        members = _members(store, name)
        assert folded[name] == members, name
        assert members == {u for u, p in profiles.items() if name in p.segments}, name
        if name in EVENT_DRIVEN:
            expected = {
                u for u, p in profiles.items() if EVENT_DRIVEN[name](updater.view(p, watermark))
            }
            assert members == expected, name
    assert all(_members(store, name) for name in config.segments)
    sizes = msgspec.msgpack.decode(backend.get_meta("segments/history") or b"")
    backend.close()
    assert sizes[-1][1] == {name: len(folded[name]) for name in config.segments}
    assert [wm for wm, _ in sizes] == sorted(wm for wm, _ in sizes)


def test_time_alone_takes_members_out_at_the_next_sweep(tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(
        '[run]\nbatch_size = 1\nsegment_sweep = "1d"\n'
        '[segments]\nrecent = "days_since_last_purchase < 3"\n'
    )
    start = 1_700_006_400.0  # a midnight UTC
    lines = [Event("b", "buyer", "purchase", start + 3600, item_id="i", value=5.0)]
    lines += [Event(f"v{d}", "other", "view", start + d * DAY + 7200) for d in range(1, 8)]
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(encode_event(e) + b"\n" for e in lines))
    store = tmp_path / "s.db"
    _run(config, src, store)
    changes = read_changes(store.with_suffix(".segments.jsonl"))
    assert [(c["user_id"], c["change"]) for c in changes] == [("buyer", "enter"), ("buyer", "exit")]
    # it turns false at day 3 + 1h; the first batch past a day boundary after that (day 3 + 2h)
    # sweeps the members and takes the buyer out, with no event of the buyer
    assert changes[1]["ts"] == start + 3 * DAY + 7200
    assert _members(store, "recent") == set()


def test_split_runs_give_the_same_changes_as_one_run(events: Path, tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(SEGMENTS)
    _run(config, events, tmp_path / "one.db")
    _run(config, events, tmp_path / "two.db", limit=5000)
    _run(config, events, tmp_path / "two.db")
    one = (tmp_path / "one.segments.jsonl").read_bytes()
    assert one and one == (tmp_path / "two.segments.jsonl").read_bytes()
    for name in config.segments:
        assert _members(tmp_path / "one.db", name) == _members(tmp_path / "two.db", name)


def test_uncommitted_changes_are_cut_off_on_restart(events: Path, tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(SEGMENTS)
    store = tmp_path / "s.db"
    _run(config, events, store, limit=5000)
    path = store.with_suffix(".segments.jsonl")
    committed = path.read_bytes()
    with open(path, "ab") as fh:  # what a crash between writing and committing leaves behind
        fh.write(b'{"segment":"buyers","user_id":"ghost","change":"enter","ts":1.0,"batch":99}\n')
    _run(config, events, store, limit=0)
    assert path.read_bytes() == committed


def test_members_page_through_the_store_and_export_as_csv(events: Path, tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(SEGMENTS)
    store = tmp_path / "s.db"
    _run(config, events, store)
    everyone = sorted(_members(store, "buyers"))
    backend = SQLiteStore(store, read_only=True)
    seen: list[str] = []
    after = None
    while True:
        page = segment_members(backend, "buyers", after=after, limit=7)
        seen += [m["user_id"] for m in page["members"]]
        if page["next"] is None:
            break
        after = page["next"]
    backend.close()
    assert seen == everyone

    cli = [sys.executable, "-m", "liveprofile.cli", "segments"]
    out = subprocess.run(
        [*cli, "export", "buyers", "--store", str(store)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["user_id"] for r in rows] == everyone
    assert all(int(r["frequency"]) >= 3 for r in rows)
    missing = subprocess.run(
        [*cli, "members", "nope", "--store", str(store)], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert "no segment 'nope'; this store declares: buyers, hot, recent_spenders" in missing.stderr


def test_segments_over_http(events: Path, tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(SEGMENTS)
    store = tmp_path / "s.db"
    _run(config, events, store)
    server = CliServer(
        ["serve", "--store", str(store)], {"LIVEPROFILE_READ_TOKEN": "r"}, tmp_path / "log"
    )
    try:
        auth = {"Authorization": "Bearer r"}
        sizes = server.client.get("/v1/segments", headers=auth).json()
        assert sizes["segments"]["buyers"]["members"] == len(_members(store, "buyers"))
        assert sizes["history"][-1]["sizes"]["hot"] == len(_members(store, "hot"))
        page = server.client.get("/v1/segments/buyers/members?limit=5", headers=auth).json()
        assert [m["user_id"] for m in page["members"]] == sorted(_members(store, "buyers"))[:5]
        nxt = server.client.get(
            f"/v1/segments/buyers/members?limit=5&after={page['next']}", headers=auth
        ).json()
        assert nxt["members"][0]["user_id"] > page["members"][-1]["user_id"]
        exported = server.client.get("/v1/segments/hot/members.csv", headers=auth)
        assert exported.headers["content-type"].startswith("text/csv")
        users = [r["user_id"] for r in csv.DictReader(io.StringIO(exported.text))]
        assert users == sorted(_members(store, "hot"))
        assert server.client.get("/v1/segments/none/members", headers=auth).status_code == 404
        assert server.client.get("/v1/segments").status_code == 401
    finally:
        server.stop()


def test_redis_worker_streams_the_same_changes(events: Path, tmp_path: Path) -> None:
    config = PipelineConfig.from_toml(SEGMENTS)
    prefix = f"seg-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS)
    store = RedisStore(REDIS, prefix=prefix)
    try:
        with open(events, "rb") as fh:
            publish(client, prefix, 1, fh)
        worker = RedisWorker(
            config, store, client, WorkerOptions(prefix, [0], batch_size=500, block_ms=50)
        )
        worker.run(max_idle_polls=2)
        streamed = [c for _, c in read_stream_changes(client, change_stream(prefix))]
        _run(config, events, tmp_path / "s.db")
        local = read_changes(tmp_path / "s.segments.jsonl")
        # the file names each change's commit, the stream gives each a de-duplication key
        # and its batch's first entry
        assert [{k: v for k, v in c.items() if k not in ("key", "first")} for c in streamed] == [
            {k: v for k, v in c.items() if k != "batch"} for c in local
        ]
        assert len({c["key"] for c in streamed}) == len(streamed)
        for name in config.segments:
            redis_members = {u for u, _ in store.scan(f"segment:{name}")}
            assert redis_members == _members(tmp_path / "s.db", name)
    finally:
        store.drop()
        store.close()
        client.delete(f"{prefix}:events:0")
        client.close()


def test_a_rule_that_fails_only_keeps_its_own_user_out() -> None:
    events = [
        Event("e1", "u1", "purchase", 0.0, category="Dairy", value=150.0),
        Event("e2", "u1", "purchase", 5 * DAY, category="Bakery", value=80.0),
    ]
    updater, p = profile_after(events)
    rules = SegmentRules({"ratio": "monetary / events > 1", "all": "frequency >= 0"}, updater)
    p = updater.new("u1", 0.0)  # no events yet: the ratio divides by zero
    assert rules.memberships(p, at=0.0) == ["all"]
    assert str(rules.explain(p, at=0.0)["ratio"]).startswith("error:")
    p.n, p.monetary = 2, 5.0
    assert rules.memberships(p, at=0.0) == ["all", "ratio"]

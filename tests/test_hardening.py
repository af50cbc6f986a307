"""Hostile and careless input: every bad record is dead-lettered with a reason and the pipeline
goes on; nothing moves the clock for everyone, takes over a user or crashes a rerun."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from test_compiled import assert_same, chunks, synthetic

from liveprofile import api
from liveprofile.config import EventsConfig, PipelineConfig
from liveprofile.engine.changes import read_changes
from liveprofile.engine.local import LocalRunner
from liveprofile.engine.state import Checkpoint
from liveprofile.errors import InvalidEvent
from liveprofile.events import Event, EventParser
from liveprofile.events.deadletter import DeadLetter, read_dead_letters
from liveprofile.events.sources import Batch, CsvSource, JsonlSource
from liveprofile.store import open_store
from liveprofile.store.sqlite import SQLiteStore

DAY = 86400.0
T0 = 1_500_000_000.0  # July 2017


def ev(event_id: str, user: str | None, ts: float | str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"event_id": event_id, "type": fields.pop("type", "view"), "ts": ts}
    if user is not None:
        out["user_id"] = user
    out.update(fields)
    return out


def write_jsonl(path: Path, events: list[dict[str, Any]], raw: tuple[bytes, ...] = ()) -> Path:
    lines = [json.dumps(e).encode() for e in events] + list(raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def run_replay(tmp_path: Path, source: Any, **kwargs: Any) -> dict[str, Any]:
    return api.replay(source, store=tmp_path / "p.db", progress=False, **kwargs)


def watermark(tmp_path: Path) -> float:
    store = open_store(str(tmp_path / "p.db"))
    blob = store.get_meta("checkpoint")
    store.close()
    assert blob is not None
    return msgspec.msgpack.decode(blob, type=Checkpoint).watermark


def letters(tmp_path: Path) -> list[str]:
    return [d.reason for d in read_dead_letters(tmp_path / "p.db.deadletters.jsonl")]


# -- 1. event time bounded relative to the watermark -------------------------------------------


def test_an_event_from_the_far_future_is_dead_lettered_and_never_moves_the_watermark(
    tmp_path: Path,
) -> None:
    events = [ev(f"e{k}", "u1", T0 + k * 60, category="tea") for k in range(5)]
    events.insert(2, ev("poison", "u2", "2099-12-31T00:00:00Z", category="tea"))
    result = run_replay(tmp_path, write_jsonl(tmp_path / "a.jsonl", events))
    assert result["events"] == 5 and result["dead_letters"] == 1
    (reason,) = letters(tmp_path)
    assert "2099-12-31T00:00:00Z" in reason and "events.max_future" in reason
    assert watermark(tmp_path) == T0 + 4 * 60
    # later genuine events still count: the interest is read at a watermark in 2017
    more = [ev(f"f{k}", "u1", T0 + 3600 + k, category="tea") for k in range(3)]
    run_replay(tmp_path, write_jsonl(tmp_path / "b.jsonl", more))
    profile = api.read_profile(tmp_path / "p.db", "u1")
    assert profile["interests"]["tea"] > 7.5
    with pytest.raises(Exception, match="no profile"):
        api.read_profile(tmp_path / "p.db", "u2")


def test_late_events_are_dead_lettered_past_the_allowed_lateness(tmp_path: Path) -> None:
    config = PipelineConfig(events=EventsConfig(allowed_lateness="1h"))
    events = [
        ev("e1", "u1", T0),
        ev("e2", "u1", T0 - 1800),  # late, within the hour
        ev("e3", "u1", T0 - 7200),  # too late
        ev("e4", "u1", T0 + 10),
    ]
    result = run_replay(tmp_path, write_jsonl(tmp_path / "a.jsonl", events), config=config)
    assert (result["events"], result["dead_letters"]) == (3, 1)
    assert "behind the watermark" in letters(tmp_path)[0]
    assert "events.allowed_lateness" in letters(tmp_path)[0]


def test_events_config_refuses_nonsense() -> None:
    with pytest.raises(Exception, match=r"events\.max_future"):
        EventsConfig(max_future=0)
    with pytest.raises(Exception, match=r"events\.max_value"):
        EventsConfig(max_value=float("inf"))


# -- 2. identity links: no takeover of a known user --------------------------------------------


def test_a_producer_cannot_take_over_a_known_user(tmp_path: Path) -> None:
    events = [
        ev("v1", "victim", T0, type="purchase", value=120.0, category="watches"),
        ev("v2", "victim", T0 + 60, category="watches"),
        ev("a1", "attacker", T0 + 120, anonymous_id="victim"),
        # an anonymous visitor who then logs in: the ordinary link still merges
        ev("n1", None, T0 + 130, anonymous_id="visitor-9", category="tea"),
        ev("n2", "alice", T0 + 140, anonymous_id="visitor-9"),
    ]
    result = run_replay(tmp_path, write_jsonl(tmp_path / "a.jsonl", events))
    assert result["dead_letters"] == 1
    assert "'victim' is a known user" in letters(tmp_path)[0]
    victim = api.read_profile(tmp_path / "p.db", "victim")
    assert victim["monetary"] == 120.0
    with pytest.raises(Exception, match="no profile"):  # the whole event was refused
        api.read_profile(tmp_path / "p.db", "attacker")
    alice = api.read_profile(tmp_path / "p.db", "alice")
    assert "tea" in alice["interests"]


def test_a_known_user_made_in_the_same_batch_is_not_taken_over(tmp_path: Path) -> None:
    events = [ev("v1", "victim", T0), ev("a1", "attacker", T0 + 1, anonymous_id="victim")]
    result = run_replay(tmp_path, write_jsonl(tmp_path / "a.jsonl", events))
    assert result["dead_letters"] == 1
    assert api.read_profile(tmp_path / "p.db", "victim")["frequency"] == 0


def test_commands_in_a_file_need_the_operators_flag(tmp_path: Path) -> None:
    events = [
        ev("v1", "u1", T0, type="purchase", value=10.0),
        ev("v2", "u2", T0 + 1, type="purchase", value=5.0),
        ev("m1", "u1", T0 + 2, type="$merge", anonymous_id="u2"),
        ev("f1", "u3", T0 + 3),
        ev("f2", "u3", T0 + 4, type="$forget"),
    ]
    path = write_jsonl(tmp_path / "a.jsonl", events)
    result = run_replay(tmp_path, path)
    assert result["dead_letters"] == 2
    assert all("operator command" in r for r in letters(tmp_path))
    assert api.read_profile(tmp_path / "p.db", "u3")

    other = tmp_path / "ops"
    other.mkdir()
    result = run_replay(other, JsonlSource(path, commands=True))
    assert result["dead_letters"] == 0
    # the same from the command line, with the operator's flag
    cli = tmp_path / "cli"
    cli.mkdir()
    subprocess.run(
        [sys.executable, "-m", "liveprofile.cli", "replay", str(path), "--store",
         str(cli / "p.db"), "--no-progress", "--allow-commands"],
        check=True, capture_output=True,
    )  # fmt: skip
    with pytest.raises(Exception, match="no profile"):
        api.read_profile(cli / "p.db", "u3")
    assert api.read_profile(other / "p.db", "u1")["monetary"] == 15.0
    for gone in ("u2", "u3"):
        with pytest.raises(Exception, match="no profile"):
            api.read_profile(other / "p.db", gone)


# -- 3. values: bounded, refunds handled the same whatever the batches -------------------------


def test_refunds_and_extreme_values_whatever_the_batches() -> None:
    events = synthetic(seed=3, users=30, days=3)
    refunds = [
        msgspec.structs.replace(e, event_id=f"refund-{k}", ts=e.ts + 5, value=-(e.value or 1.0))
        for k, e in enumerate(events)
        if e.type == "purchase" and k % 2 == 0
    ]
    # a refund of more than was ever spent: net monetary below zero
    big = Event("big-refund", events[0].user, "purchase", events[0].ts + 9, value=-500.0)
    mixed = sorted([*events, *refunds, big], key=lambda e: e.ts)
    assert len(refunds) > 5
    assert_same(chunks(mixed, 97))


def test_values_beyond_the_bound_are_dead_lettered(tmp_path: Path) -> None:
    events = [
        ev("e1", "u1", T0, type="purchase", value=-49.9),
        ev("e2", "u1", T0 + 1, type="purchase", value=1e18),
        ev("e3", "u1", T0 + 2, type="purchase", value=1e307),
        ev("e4", "u1", T0 + 3, type="view", value=1e308),
        ev("e5", "u1", T0 + 4, type="purchase", value=100.0),
    ]
    raw = (b'{"event_id": "e6", "user_id": "u1", "type": "view", "ts": 1.5e9, "value": 1e999}',)
    folder = tmp_path / "run"
    folder.mkdir()
    path = write_jsonl(folder / "a.jsonl", events, raw)
    result = run_replay(folder, path, config=PipelineConfig())
    assert (result["events"], result["dead_letters"]) == (2, 4)
    assert sum("events.max_value" in r for r in letters(folder)) == 3
    profile = api.read_profile(folder / "p.db", "u1")
    assert profile["monetary"] == pytest.approx(50.1)
    json.dumps(profile, allow_nan=False)


# -- 4, 9. parsing limits and validation gaps --------------------------------------------------


DEEP = b'{"event_id": "d", "user_id": "u", "type": "view", "ts": 1, "x": ' + b"[" * 1000
DEEP += b"]" * 1000 + b"}"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (DEEP, "nested deeper"),
        (b'{"event_id": "e", "user_id": "u", "type": "view\\n", "ts": 1}', "'type'"),
        (b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1, "k\xff": 1}', "UTF-8"),
        (b'{"event_id": "e", "user_id": "u\\u0000", "type": "view", "ts": 1}', "user_id"),
        (b'{"event_id": "e\\n", "user_id": "u", "type": "view", "ts": 1}', "event_id"),
    ],
)
def test_the_parser_refuses(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        EventParser().parse_json(raw)


def test_a_jsonl_file_with_a_bom_and_a_poison_line(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    good = [json.dumps(ev(f"e{k}", "u1", T0 + k)).encode() for k in range(3)]
    path.write_bytes(b"\xef\xbb\xbf" + good[0] + b"\r\n" + DEEP + b"\n" + b"\r\n".join(good[1:]))
    for _ in range(2):  # the rerun resumes; nothing is applied twice, nothing crashes
        result = run_replay(tmp_path, path)
    assert api.read_profile(tmp_path / "p.db", "u1")["frequency"] == 0
    assert api.read_profile(tmp_path / "p.db", "u1")["counts"] == {"view": 3}
    assert ["nested deeper" in r for r in letters(tmp_path)] == [True]
    assert result["events"] == 0


# -- 5. CSV sources ----------------------------------------------------------------------------


def test_a_csv_file_with_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    rows = [
        b"\xef\xbb\xbfuserId,movieId,rating,timestamp",
        b"1,31,2.5,1260759144",
        b"1,\xff,3.0,1260759145",  # not UTF-8
        b"1,32," + b"9" * 200_000 + b",1260759146",  # an oversize field
        b'1,"33,4.0,1260759147',  # an unbalanced quote
        b"1,34,4.0,1260759148",
        b"1,35,4.0",  # a missing field
        b"1,36,5.0,1260759149",
    ]
    path.write_bytes(b"\r\n".join(rows) + b"\r\n")
    mapping = {"user_id": "userId", "item_id": "movieId", "value": "rating", "ts": "timestamp",
               "event_id": "{userId}:{movieId}"}  # fmt: skip
    source = CsvSource(path, mapping, constants={"type": "rate"})
    result = run_replay(tmp_path, source)
    assert (result["events"], result["dead_letters"]) == (3, 4)
    reasons = letters(tmp_path)
    assert "UTF-8" in reasons[0] and "more than the limit" in reasons[1]
    assert "unbalanced quote" in reasons[2] and "fields" in reasons[3]
    # a rerun resumes after the last row: nothing twice
    again = run_replay(tmp_path, CsvSource(path, mapping, constants={"type": "rate"}))
    assert (again["events"], again["dead_letters"]) == (0, 0)


# -- 8. damaged state: errors that name the row; files cut short -------------------------------


def _damaged_store(tmp_path: Path) -> tuple[Path, PipelineConfig, list[dict[str, Any]]]:
    config = PipelineConfig.from_toml('[run]\nprofile_ttl = "30d"\nbatch_size = 50\n')
    events = [
        ev(f"e{k}", f"u{k % 7}", T0 + k * 600, item_id=f"i{k % 5}", category="tea",
           type="purchase" if k % 4 == 0 else "view", value=3.0 if k % 4 == 0 else None)
        for k in range(120)
    ]  # fmt: skip
    events.append(ev("anon", None, T0 + 10, anonymous_id="visitor"))
    events.append(ev("login", "u1", T0 + 20, anonymous_id="visitor"))
    path = write_jsonl(tmp_path / "a.jsonl", events)
    run_replay(tmp_path, path, config=config)
    later = [ev(f"l{k}", f"u{k % 7}", T0 + 40 * DAY + k, item_id=f"i{k % 5}",
                anonymous_id="visitor" if k == 1 else None) for k in range(7)]  # fmt: skip
    return write_jsonl(tmp_path / "b.jsonl", later), config, later


ROW_KINDS = ["profile", "item", "pending", "dedup", "alias", "expiry"]
META_KINDS = ["checkpoint", "population", "model/convert", "metrics/convert"]


@pytest.mark.parametrize("kind", ROW_KINDS + META_KINDS)
def test_a_damaged_row_is_named(tmp_path: Path, kind: str) -> None:
    later, config, _ = _damaged_store(tmp_path)
    store = open_store(str(tmp_path / "p.db"))
    store.setup()
    if kind in ROW_KINDS:
        key, blob = next(iter(store.scan(kind)))
        if kind == "profile":
            key, blob = "u1", store.read("profile", ["u1"])[0] or b""
        garbage = b"\xff\xfe" if kind == "alias" else blob[:1] + b"\xc1\xc1\xc1"
        store.commit({kind: {key: garbage}}, {})
        name = f"{kind} row {key!r}" if kind not in ("profile", "item") else f"{key!r}"
    else:
        key = kind
        store.commit({}, {kind: b"\xc1\xc1"})
        name = f"meta row {kind!r}"
    store.close()
    with pytest.raises(Exception, match="is damaged") as info:
        run_replay(tmp_path, later, config=config)
    assert name in str(info.value) and "replay the events into a new store" in str(info.value)
    if kind == "profile":  # the read path names it too
        with pytest.raises(Exception, match="profile 'u1' is damaged"):
            api.read_profile(tmp_path / "p.db", "u1")


def test_files_cut_short_are_reported_and_recovered(tmp_path: Path) -> None:
    config = PipelineConfig.from_toml('[segments]\nbuyers = "frequency >= 1"\n')
    events = [ev(f"e{k}", f"u{k}", T0 + k, type="purchase", value=1.0) for k in range(5)]
    path = write_jsonl(tmp_path / "a.jsonl", events, (b'{"broken', b'{"also broken'))
    run_replay(tmp_path, path, config=config)
    dead = tmp_path / "p.db.deadletters.jsonl"
    changes = tmp_path / "p.db.segments.jsonl"
    for cut in (dead, changes):
        cut.write_bytes(cut.read_bytes()[:-9])  # cut inside the last line
    listed = read_dead_letters(dead)
    assert listed[0].reason.startswith("not valid JSON")
    assert "damaged line 2" in listed[1].reason
    more = [ev(f"f{k}", f"v{k}", T0 + 100 + k, type="purchase", value=1.0) for k in range(3)]
    result = run_replay(
        tmp_path, write_jsonl(tmp_path / "b.jsonl", more, (b"{nope",)), config=config
    )
    assert result["events"] == 3
    reasons = [d.reason for d in read_dead_letters(dead)]
    assert len(reasons) == 3 and reasons[-1].startswith("not valid JSON")
    users = [c["user_id"] for c in read_changes(changes)]
    assert users[-3:] == ["v0", "v1", "v2"] and "u0" in users


def test_a_full_disk_says_enospc(tmp_path: Path) -> None:
    runner = LocalRunner(PipelineConfig(), SQLiteStore(tmp_path / "p.db"), "/dev/full")
    try:
        batch = Batch(events=[], dead_letters=[DeadLetter("x", "bad", "test", 0)], offset=1)
        with pytest.raises(Exception, match="ENOSPC"):
            runner.process("test", batch)
    finally:
        with contextlib.suppress(OSError):
            runner.dead_letters.close()  # what is buffered cannot go anywhere either
        runner.lock.release()
        runner.store.close()


# -- memory: the resting profiles kept between batches are bounded -----------------------------


def test_a_cap_on_resting_profiles_changes_nothing_but_memory(tmp_path: Path) -> None:
    events = _synthetic_dicts()
    path = write_jsonl(tmp_path / "a.jsonl", events)
    stores = {}
    for cap in (0, 3):
        folder = tmp_path / f"cap{cap}"
        folder.mkdir()
        config = PipelineConfig.from_toml(f"[run]\nbatch_size = 40\nresting_profiles = {cap}\n")
        runner = LocalRunner(config, SQLiteStore(folder / "p.db"), folder / "dead.jsonl")
        runner.run(JsonlSource(path))
        if cap:
            assert len(runner.state._resting_profiles) <= cap
        stores[cap] = {ns: dict(runner.store.scan(ns)) for ns in ("profile", "item", "pending")}
        runner.close()
    assert stores[0] == stores[3] and stores[0]["profile"]


def _synthetic_dicts() -> list[dict[str, Any]]:
    from liveprofile.datasets.synthetic import SyntheticConfig, generate

    return list(generate(SyntheticConfig(users=25, items=20, days=3, seed=8)))

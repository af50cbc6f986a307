"""Erasure removes every identity link to the erased user, wherever batches end.

A profile's ``aliases`` list does not name every link to it: a login whose visitor id sent
nothing before is linked without an alias entry, the list keeps ``MAX_ALIASES`` ids, and a link
to a user later merged into another leads to the merged id. Erasure finds the links by their
target (:mod:`liveprofile.engine.erasure`)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from children import popen
from test_state_properties import check_batch_boundaries, dump, place, run, write

from liveprofile.api import replay
from liveprofile.config import PipelineConfig, RunConfig
from liveprofile.events import Event
from liveprofile.events.schema import encode_event
from liveprofile.privacy import erase
from liveprofile.profile.identity import MAX_ALIASES
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store import open_store
from liveprofile.store.layout import ALIASES, PROFILES

REDIS = "redis://127.0.0.1:6379/0"
T0 = 1_700_006_400.0


def _lines(rows: list[dict[str, Any]]) -> list[bytes]:
    return [
        msgspec.json.encode({"event_id": f"e{k}", "ts": T0 + k, **row})
        for k, row in enumerate(rows)
    ]


def _config() -> PipelineConfig:
    return PipelineConfig()


def _replayed(rows: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """Replay ``rows`` in batches of ``sizes``: the stored state, which is the state of one
    batch of them all where batch boundaries may change nothing (``check_batch_boundaries``),
    with no dead letter."""
    config = _config()
    lines = _lines(rows)
    check_batch_boundaries(config, lines, sizes)
    with place("sqlite") as (tmp, url):
        source = write(tmp, lines)
        run(config, source, url, sizes)
        state = dump(config, url, source)
    assert state["dead"] == []
    return state


LOGIN = {"user_id": "u1", "anonymous_id": "v0", "type": "purchase", "value": 3.0}
FORGET = {"user_id": "u1", "type": "$forget"}


@pytest.mark.parametrize("sizes", [[1], [2]])
def test_erasing_a_user_removes_the_link_of_a_visitor_that_sent_nothing_before(
    sizes: list[int],
) -> None:
    state = _replayed([LOGIN, FORGET, {"user_id": "v0", "type": "view"}], sizes)
    assert state["rows"][ALIASES] == {}
    assert sorted(state["rows"][PROFILES]) == ["v0"]  # the visitor's own, not the user's


def test_erasing_a_user_with_more_linked_visitors_than_the_alias_list_keeps() -> None:
    n = MAX_ALIASES + 6
    rows: list[dict[str, Any]] = []
    for k in range(n):
        if k % 2:  # half the visitors browse before they log in: folded, listed as aliases
            rows.append({"anonymous_id": f"v{k}", "type": "view", "category": "tea"})
        rows.append({"user_id": "u1", "anonymous_id": f"v{k}", "type": "view"})
    before = _replayed(rows, [25])
    assert len(before["rows"][ALIASES]) == n
    after = _replayed([*rows, FORGET, *({"user_id": f"v{k}", "type": "view"} for k in (0, 1))],
                          [25])  # fmt: skip
    assert after["rows"][ALIASES] == {}
    assert sorted(after["rows"][PROFILES]) == ["v0", "v1"]


def test_erasing_a_user_removes_links_to_the_users_merged_into_it() -> None:
    rows: list[dict[str, Any]] = [
        {"user_id": "u1", "anonymous_id": "v0", "type": "view"},
        {"user_id": "u2", "type": "view"},
        {"user_id": "u2", "anonymous_id": "u1", "type": "$merge"},
        {"user_id": "u2", "type": "$forget"},
    ]
    for sizes in ([1], [3], [10]):
        assert _replayed(rows, sizes)["rows"][ALIASES] == {}


def test_erasing_a_merged_id_removes_its_link_only() -> None:
    """The merge re-pointed ``v0``'s link at ``u2`` (links follow merges): erasing the alias
    ``u1`` leaves the links of ``u2``."""
    rows: list[dict[str, Any]] = [
        {"user_id": "u1", "anonymous_id": "v0", "type": "view"},
        {"user_id": "u2", "type": "view"},
        {"user_id": "u2", "anonymous_id": "u1", "type": "$merge"},
        {"user_id": "u1", "type": "$forget"},
    ]
    for sizes in ([1], [10]):
        assert _replayed(rows, sizes)["rows"][ALIASES] == {"v0": b"u2"}


def test_privacy_erase_on_sqlite_removes_the_link(tmp_path: Path) -> None:
    (tmp_path / "ev.jsonl").write_bytes(b"\n".join(_lines([LOGIN])) + b"\n")
    store = tmp_path / "p.db"
    replay(tmp_path / "ev.jsonl", store=store, config=_config(), progress=False)
    assert erase(store, ["u1"])["erased"] == ["u1"]
    backend = open_store(str(store), read_only=True)
    try:
        assert list(backend.scan(ALIASES)) == [] and list(backend.scan(PROFILES)) == []
    finally:
        backend.close()


def test_privacy_erase_on_redis_removes_the_link() -> None:
    prefix = f"erase-links-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(REDIS)
    store = RedisStore(REDIS, prefix=prefix)
    events = [Event(f"e{k}", "u1", "view", T0 + k, anonymous_id=f"v{k}") for k in range(3)]
    try:
        publish(client, prefix, 2, [encode_event(e) for e in events])
        options = WorkerOptions(prefix, [0, 1], batch_size=2, block_ms=50)
        RedisWorker(_config(), store, client, options).run(max_idle_polls=2)
        assert _links(client, prefix) == {f"v{k}": "u1" for k in range(3)}
        assert erase(f"{REDIS}?prefix={prefix}", ["u1"])["status"] == "queued"
        RedisWorker(_config(), store, client, options).run(max_idle_polls=2)
        assert _links(client, prefix) == {}
        assert store.read(PROFILES, ["u1"]) == [None]
    finally:
        store.drop()
        store.close()
        client.close()


def test_privacy_erase_queues_on_a_redis_store_named_by_its_unix_socket(tmp_path: Path) -> None:
    """Every Redis URL (``redis://``, ``rediss://``, ``unix://``) names a store a worker writes:
    the erasure is queued for the worker, not applied beside it."""
    sock = tmp_path / "redis.sock"
    args = ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", ""]
    server = popen([*args, "--appendonly", "no", "--dir", str(tmp_path)])
    url = f"unix://{sock}"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        store = RedisStore(f"{url}?prefix=sock")
        events = [Event(f"e{k}", "u1", "view", T0 + k, anonymous_id=f"v{k}") for k in range(3)]
        publish(client, "sock", 2, [encode_event(e) for e in events])
        options = WorkerOptions("sock", [0, 1], batch_size=2, block_ms=50)
        RedisWorker(_config(), store, client, options).run(max_idle_polls=2)
        assert store.read(PROFILES, ["u1"]) != [None]
        assert erase(f"{url}?prefix=sock", ["u1"])["status"] == "queued"
        assert store.read(PROFILES, ["u1"]) != [None]  # queued: the worker applies it
        RedisWorker(_config(), store, client, options).run(max_idle_polls=2)
        assert _links(client, "sock") == {}
        assert store.read(PROFILES, ["u1"]) == [None]
        store.close()
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=60)


def _links(client: redis.Redis, prefix: str) -> dict[str, str]:
    """Every identity link under ``prefix``, of every partition's scope."""
    out = {}
    for key in client.scan_iter(match=f"{prefix}:{ALIASES}*"):
        out.update({a.decode(): u.decode() for a, u in client.hgetall(key).items()})
    return out


def test_a_visitor_of_an_erased_user_is_taken_in_the_batch_of_the_erasure() -> None:
    """Found with this change (on the compiled engine, before it too): a visitor linked before
    the batch has no row of its own there, so its event after the erasure of its user in the
    same batch found no profile (a KeyError)."""
    rows: list[dict[str, Any]] = [
        {"anonymous_id": "v1", "type": "view"},
        {"user_id": "u1", "anonymous_id": "v1", "type": "view"},
        FORGET,
        {"user_id": "v1", "type": "view"},
    ]
    for sizes in ([2], [3], [1, 3]):
        state = _replayed(rows, sizes)
        assert state["rows"][ALIASES] == {} and sorted(state["rows"][PROFILES]) == ["v1"]


@pytest.mark.parametrize("relink", ["$merge", "login"])
@pytest.mark.parametrize("end", ["$forget", "expiry"])
def test_a_relinked_visitor_keeps_its_link_when_its_first_user_goes_after_a_restart(
    relink: str, end: str
) -> None:
    """Visitor v0 browses and logs in as u1 (v0 in u1's alias list); then v0 is linked to u2
    (an operator's ``$merge``, or a login as u2). After a restart, u1 is erased or expires:
    v0's link is not read in that batch (no event names v0) and leads to u2, so it stays, as
    it does in a run without the restart (where the state still holds the link)."""
    day = 86400.0
    relinked = {"user_id": "u2", "anonymous_id": "v0", "type": "$merge" if relink == "$merge"
                else "view"}  # fmt: skip
    rows: list[dict[str, Any]] = [
        {"anonymous_id": "v0", "type": "view", "category": "tea"},
        {"user_id": "u1", "anonymous_id": "v0", "type": "purchase", "value": 3.0},
        {"user_id": "u2", "type": "view"},
        relinked,
        # u2 comes back every day; u1, idle past the TTL, expires at the batch of day 2.5
        {"user_id": "u2", "type": "view", "ts": T0 + 0.9 * day},
        {"user_id": "u2", "type": "view", "ts": T0 + 1.8 * day},
        {**FORGET, "ts": T0 + 2 * day}
        if end == "$forget"
        else {"user_id": "u3", "type": "view", "ts": T0 + 2 * day},
        {"user_id": "u2", "type": "view", "ts": T0 + 2.5 * day},
        {"anonymous_id": "v0", "type": "view", "ts": T0 + 3 * day},
    ]
    lines = [
        msgspec.json.encode({"event_id": f"e{k}", "ts": T0 + k, **row})
        for k, row in enumerate(rows)
    ]
    config = PipelineConfig(run=RunConfig(profile_ttl="1d" if end == "expiry" else ""))
    states = []
    for stop_after in ([], [4]):  # restarted once the links are made
        with place("sqlite") as (tmp, url):
            source = write(tmp, lines)
            run(config, source, url, [1], stop_after=stop_after)
            states.append(dump(config, url, source))
    uninterrupted, restarted = states
    assert uninterrupted["rows"][ALIASES] == {"v0": b"u2"}
    assert restarted["rows"][ALIASES] == {"v0": b"u2"}
    assert sorted(restarted["rows"][PROFILES]) == sorted(uninterrupted["rows"][PROFILES])
    assert "v0" not in restarted["rows"][PROFILES]  # its last view went to u2

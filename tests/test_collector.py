"""The HTTP collector as a real server (``liveprofile collect`` under uvicorn), in Redis mode
against a redis-server of its own and in embedded mode on a SQLite store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cli_server import CliServer
from redis_server import free_port, running

from liveprofile import read_profile
from liveprofile.errors import ProfileNotFound, StoreError
from liveprofile.events.deadletter import read_dead_letters
from liveprofile.redis.entrykey import KEY_FIELD, Follower
from liveprofile.redis.streams import partition_of, stream_key

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 30.0
LIMIT = 4096


def _event(i: int, user: str = "ann", **extra: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "user_id": user, "type": "view", "ts": 1_700_000_000 + i, **extra}


class Collector(CliServer):
    """A ``liveprofile collect`` subprocess on a free port."""

    def __init__(self, args: list[str], log: Path) -> None:
        super().__init__(["collect", *args], {"LIVEPROFILE_TOKEN": TOKEN}, log)

    def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            "/v1/events", content=content, headers=AUTH if headers is None else headers
        )

    def stop(self) -> str:
        """SIGTERM: uvicorn shuts down gracefully, draining the sink first."""
        log = super().stop()
        assert "Application shutdown complete" in log, log
        return log


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for server in running(tmp_path_factory.mktemp("redis"), appendonly=False):
        yield server.url


@pytest.fixture(scope="module")
def redis_collector(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Collector]:
    log = tmp_path_factory.mktemp("collector") / "collector.log"
    args = ["--redis", redis_url, "--prefix", "t", "--partitions", "2"]
    collector = Collector([*args, "--max-body-bytes", str(LIMIT)], log)
    yield collector
    collector.stop()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def test_redis_single_and_batch_land_in_partition_streams(
    redis_collector: Collector, client: redis.Redis
) -> None:
    before = {p: client.xlen(stream_key("t", p)) for p in (0, 1)}
    r = redis_collector.post(_event(1, "ann"))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "rejected": []}
    batch = [_event(i, f"u{i}") for i in range(2, 12)]
    r = redis_collector.post(batch)
    assert r.json() == {"accepted": 10, "rejected": []}
    expected = dict(before)
    for e in [_event(1, "ann"), *batch]:
        expected[partition_of(e["user_id"], 2)] += 1
    assert {p: client.xlen(stream_key("t", p)) for p in (0, 1)} == expected
    entries = client.xrange(stream_key("t", partition_of("ann", 2)))
    assert any(json.loads(fields[b"e"]) == _event(1, "ann") for _, fields in entries)


def test_redis_rejected_events_reported_and_dead_lettered(
    redis_collector: Collector, client: redis.Redis
) -> None:
    streams_before = sum(client.xlen(stream_key("t", p)) for p in (0, 1))
    dead_before = client.xlen("t:deadletters")
    erase = {**_event(22, "ann"), "type": "$forget"}
    body = [
        _event(20),
        {"event_id": "x", "type": "view", "ts": 1},
        7,
        _event(21, ts="oops"),
        erase,
    ]
    r = redis_collector.post(body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["accepted"] == 1
    assert [x["index"] for x in out["rejected"]] == [1, 2, 3, 4]
    assert "neither 'user_id' nor 'anonymous_id'" in out["rejected"][0]["reason"]
    assert "'ts'" in out["rejected"][2]["reason"]
    assert "erasure is not accepted from the collector" in out["rejected"][3]["reason"]
    assert sum(client.xlen(stream_key("t", p)) for p in (0, 1)) == streams_before + 1
    assert client.xlen("t:deadletters") == dead_before + 4
    letters = client.xrange("t:deadletters")[-4:]
    assert [f[b"reason"].decode() for _, f in letters] == [x["reason"] for x in out["rejected"]]
    assert json.loads(letters[0][1][b"raw"]) == body[1]


def test_redis_dead_letters_are_keyed_so_that_a_resent_request_is_read_once(
    redis_collector: Collector, client: redis.Redis
) -> None:
    """A pipeline sent again after a broken connection appends the request's dead letters
    twice: a follower reads them once, and the next request's as new."""
    after = client.xrevrange("t:deadletters", count=1)
    start = after[0][0].decode() if after else "0-0"
    bad = {"event_id": "x", "type": "view", "ts": 1}
    assert len(redis_collector.post([bad, 7]).json()["rejected"]) == 2
    sent = client.xrange("t:deadletters", f"({start}", "+")
    keys = [f[KEY_FIELD.encode()].decode() for _, f in sent]
    assert len(set(keys)) == 2 and all(k.startswith("http:") for k in keys)
    for _, fields in sent:  # the same pipeline once more
        client.xadd("t:deadletters", fields)
    assert len(redis_collector.post([bad]).json()["rejected"]) == 1
    read = Follower(client, "t:deadletters", after=start).read()
    assert [f["reason"] for _, f in read] == [f[b"reason"].decode() for _, f in sent] + [
        read[0][1]["reason"]
    ]


@pytest.mark.parametrize(
    ("headers", "message"),
    [({}, "missing bearer token"), ({"Authorization": "Bearer nope"}, "invalid bearer token")],
)
def test_redis_token_required(
    redis_collector: Collector, headers: dict[str, str], message: str
) -> None:
    r = redis_collector.post(_event(30), headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert message in r.json()["error"]


def test_redis_limits_and_malformed_json(redis_collector: Collector) -> None:
    r = redis_collector.post(b"[" + b" " * LIMIT + b"]")
    assert r.status_code == 413 and "limit" in r.json()["error"]
    chunked = redis_collector.client.post(
        "/v1/events", content=iter([b"[", b" " * LIMIT, b"]"]), headers=AUTH
    )
    assert chunked.status_code == 413, chunked.text
    r = redis_collector.post(b'{"event_id": "e1", "user_id"')
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert redis_collector.client.get("/healthz").json() == {"status": "ok"}


def test_refuses_to_start_without_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LIVEPROFILE_TOKEN"}
    cmd = [sys.executable, "-m", "liveprofile.cli", "collect", "--store", str(tmp_path / "p.db")]
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=TIMEOUT, check=False)
    assert done.returncode != 0
    assert b"without a token" in done.stderr


def _wait_for_profile(store: Path, user: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return read_profile(store, user)
        except (ProfileNotFound, StoreError):
            assert time.monotonic() < deadline, f"no profile for {user} in {store}"
            time.sleep(0.1)


def test_embedded_mode_applies_events_to_store(tmp_path: Path) -> None:
    store = tmp_path / "profiles.db"
    collector = Collector(["--store", str(store)], tmp_path / "collector.log")
    try:
        r = collector.post(_event(1, "ann", category="shoes"))
        assert r.status_code == 202, r.text
        assert r.json() == {"accepted": 1, "rejected": []}
        r = collector.post(
            [_event(2, "bob"), _event(3, "bob", type="purchase", value=9.5), {"user_id": "x"}]
        )
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 2
        assert [x["index"] for x in r.json()["rejected"]] == [2]
        assert "event_id" in r.json()["rejected"][0]["reason"]
        assert list(_wait_for_profile(store, "ann")["interests"]) == ["shoes"]
        bob = _wait_for_profile(store, "bob")
        assert bob["frequency"] == 1 and bob["monetary"] == 9.5
        assert collector.post(_event(4), headers={}).status_code == 401
        assert collector.post(b"nope").status_code == 400
        # queued just before shutdown: the lifespan drains the queue into the store
        assert collector.post(_event(5, "cat")).status_code == 202
    finally:
        collector.stop()
    assert read_profile(store, "cat")["frequency"] == 0
    letters = read_dead_letters(tmp_path / "profiles.db.deadletters.jsonl")
    assert [json.loads(x.raw) for x in letters] == [{"user_id": "x"}]
    assert letters[0].source == "http" and "event_id" in letters[0].reason


def test_unreachable_redis_gives_503_with_error_body() -> None:
    """In process (no lifespan needed for Redis mode): health and POST report the dead sink."""
    from liveprofile.redis.sink import RedisSinkSettings
    from liveprofile.serving.collector import CollectorSettings, create_app

    url = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(CollectorSettings(TOKEN, RedisSinkSettings(url=url)))

    async def go() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as c:
            health = await c.get("/healthz")
            post = await c.post("/v1/events", json=_event(1), headers=AUTH)
        return health, post

    health, post = asyncio.run(go())
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert post.status_code == 503 and "cannot append to Redis" in post.json()["error"]

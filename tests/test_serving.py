"""The read API as a real server (``liveprofile serve``) on a replayed SQLite store."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cli_server import CliServer

import liveprofile
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl

TOKEN = "read-token-456"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 30.0


@dataclass
class Server:
    base: str
    store: Path
    user: str
    item: str
    client: httpx.Client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve")
    events = folder / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=30, items=40, categories=4, days=6, seed=5))
    store = folder / "profiles.db"
    liveprofile.replay(events, store=store, progress=False)
    view = next(
        e
        for e in map(json.loads, events.read_text().splitlines())
        if e["type"] == "view" and e.get("item_id")
    )
    env = {"LIVEPROFILE_READ_TOKEN": TOKEN}
    running = CliServer(["serve", "--store", str(store)], env, folder / "serve.log")
    yield Server(running.base, store, str(view["user_id"]), str(view["item_id"]), running.client)
    running.stop()


def test_profile_matches_read_profile(server: Server) -> None:
    r = server.client.get(f"/v1/profiles/{server.user}", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == json.loads(json.dumps(liveprofile.read_profile(server.store, server.user)))


def test_unknown_user_is_404_with_a_body(server: Server) -> None:
    r = server.client.get("/v1/profiles/nobody-here", headers=AUTH)
    assert r.status_code == 404
    assert r.json() == {"error": "no profile for user 'nobody-here'"}


def test_batch_reports_missing_users(server: Server) -> None:
    r = server.client.post(
        "/v1/profiles:batch", json={"users": [server.user, "nobody-here"]}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body["profiles"]) == [server.user]
    assert body["profiles"][server.user]["user"] == server.user
    assert body["missing"] == ["nobody-here"]
    too_many = {"users": [f"u{i}" for i in range(1001)]}
    r = server.client.post("/v1/profiles:batch", json=too_many, headers=AUTH)
    assert r.status_code in (413, 422)


def test_score_is_a_probability_with_features(server: Server) -> None:
    params = {"user": server.user, "item": server.item, "task": "convert"}
    r = server.client.get("/v1/score", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["user"], body["item"], body["task"]) == (server.user, server.item, "convert")
    assert 0.0 < body["score"] < 1.0
    assert body["top_features"]
    for name, contribution in body["top_features"]:
        assert isinstance(name, str) and math.isfinite(contribution)
    # the item's category is known from its statistics, so its topic features take part
    every = server.client.get("/v1/score", params={**params, "top": 1000}, headers=AUTH).json()
    assert any(name.startswith("topic=") for name, _ in every["top_features"])
    r = server.client.get("/v1/score", params={**params, "task": "nope"}, headers=AUTH)
    assert r.status_code == 404 and "nope" in r.json()["error"]
    r = server.client.get("/v1/score", params={**params, "user": "nobody-here"}, headers=AUTH)
    assert r.status_code == 404 and "nobody-here" in r.json()["error"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_token_is_required(server: Server, headers: dict[str, str]) -> None:
    for method, url in [
        ("GET", f"/v1/profiles/{server.user}"),
        ("POST", "/v1/profiles:batch"),
        ("GET", f"/v1/score?user={server.user}&item={server.item}&task=convert"),
    ]:
        r = server.client.request(method, url, headers=headers, json={"users": []})
        assert r.status_code == 401, (method, url, r.text)
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in r.json()


def test_openapi_lists_the_paths(server: Server) -> None:
    r = server.client.get("/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"/v1/profiles/{user}", "/v1/profiles:batch", "/v1/score", "/healthz"} <= set(paths)


def test_refuses_to_start_without_a_token(server: Server, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LIVEPROFILE_READ_TOKEN"}
    cmd = [sys.executable, "-m", "liveprofile.cli", "serve", "--store", str(server.store)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 78
    assert "read token" in done.stderr

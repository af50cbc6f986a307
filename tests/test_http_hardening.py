"""Every HTTP server refuses large bodies and slow or silent clients, answers only what its
OpenAPI document says (schemathesis), and keeps the good events of a request with a poison one."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from cli_server import CliServer
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import liveprofile
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.events.deadletter import read_dead_letters
from liveprofile.profile.state import Profile, encode_profile
from liveprofile.store.sqlite import SQLiteStore

TOKEN = "hard-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"LIVEPROFILE_READ_TOKEN": TOKEN, "LIVEPROFILE_TOKEN": TOKEN}
ENV["LIVEPROFILE_HEADER_TIMEOUT"] = "1"  # seconds, so that the slow clients are cut quickly
T0 = 1_700_000_000


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    folder = tmp_path_factory.mktemp("serve")
    events = folder / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=20, items=20, categories=3, days=3, seed=2))
    liveprofile.replay(events, store=folder / "p.db", progress=False)
    # a profile written before values were bounded: sums that overflowed to infinity
    store = SQLiteStore(folder / "p.db")
    store.setup()
    p = Profile("overflowed", T0, T0, T0, n=2, monetary=math.inf, value_sum=math.inf, value_n=2)
    store.commit({"profile": {"overflowed": encode_profile(p)}}, {})
    store.close()
    server = CliServer(["serve", "--store", str(folder / "p.db")], ENV, folder / "serve.log")
    server.store = folder / "p.db"  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture(scope="module")
def collect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliServer]:
    folder = tmp_path_factory.mktemp("collect")
    server = CliServer(["collect", "--store", str(folder / "c.db")], ENV, folder / "collect.log")
    server.folder = folder  # type: ignore[attr-defined]
    yield server
    server.stop()


def _raw(server: CliServer, data: bytes) -> bytes:
    """Send ``data`` on a new connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        if data:
            sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("which", ["serve", "collect"])
def test_large_bodies_get_413(which: str, request: pytest.FixtureRequest) -> None:
    server: CliServer = request.getfixturevalue(which)
    path = "/v1/profiles:batch" if which == "serve" else "/v1/events"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {80 * 1024 * 1024}\r\n\r\n"
    )
    answer = _raw(server, head.encode() + b'{"users": [')
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"users": ["' + b"u" * (2 * 1024 * 1024) + b'"]}'

    r = server.client.post(path, content=chunked(), headers=AUTH)
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_non_finite_numbers_are_never_written(serve: CliServer) -> None:
    r = serve.client.post("/v1/profiles:batch", json={"users": ["overflowed"]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert json.loads(r.text)["profiles"]["overflowed"]["monetary"] is None
    assert serve.client.get("/v1/profiles/overflowed", headers=AUTH).json()["monetary"] is None
    out = subprocess.run(
        [sys.executable, "-m", "liveprofile.cli", "profile", "overflowed", "--store",
         str(serve.store), "--json"],  # type: ignore[attr-defined]
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in the output"))["user"]


@pytest.mark.parametrize("data", [b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"])
def test_silent_and_slow_clients_are_disconnected(serve: CliServer, data: bytes) -> None:
    assert _raw(serve, data) == b""  # closed by the server, answering nothing


def test_collector_keeps_the_good_events_of_a_request_with_a_poison_one(
    collect: CliServer,
) -> None:
    deep = {"event_id": "deep", "user_id": "ann", "type": "view", "ts": T0, "x": 0}
    text = json.dumps(deep).replace('"x": 0', '"x": ' + "[" * 1000 + "]" * 1000)
    good = [{"event_id": f"g{k}", "user_id": "ann", "type": "view", "ts": T0 + k} for k in range(3)]
    future = {"event_id": "f", "user_id": "zed", "type": "view", "ts": "2099-12-31T00:00:00Z"}
    body = "[" + ",".join([json.dumps(good[0]), text, json.dumps(good[1]), json.dumps(future),
                           json.dumps(good[2])]) + "]"  # fmt: skip
    r = collect.client.post("/v1/events", content=body.encode(), headers=AUTH)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 4
    assert [(x["index"], "nested deeper" in x["reason"]) for x in r.json()["rejected"]] == [
        (1, True)
    ]
    folder: Path = collect.folder  # type: ignore[attr-defined]
    dead = folder / "c.db.deadletters.jsonl"
    deadline = time.monotonic() + 30
    while not (dead.exists() and len(read_dead_letters(dead)) == 2):
        assert time.monotonic() < deadline, "the runner did not dead-letter the future event"
        time.sleep(0.1)
    reasons = [d.reason for d in read_dead_letters(dead)]
    assert "events.max_future" in reasons[1]
    # the store keeps working: later events are applied, the clock is 2023, not 2099
    r = collect.client.post("/v1/events", content=json.dumps(good[2] | {"event_id": "g9"}),
                            headers=AUTH)  # fmt: skip
    assert r.status_code == 202
    assert collect.client.get("/healthz").status_code == 200


def _checks() -> list[Any]:
    return [not_a_server_error, status_code_conformance, content_type_conformance,
            response_schema_conformance]  # fmt: skip


FUZZ = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def _fuzz(server: CliServer) -> int:
    """Every operation of the server's OpenAPI document, with generated requests; each answer
    must be documented, well typed and not a server error."""
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(headers=AUTH, checks=_checks(), timeout=30)

        run()
        operations += 1
    return operations


def test_serve_answers_what_its_openapi_says(serve: CliServer) -> None:
    assert _fuzz(serve) >= 10


def test_collect_answers_what_its_openapi_says(collect: CliServer) -> None:
    assert _fuzz(collect) == 2

"""``liveprofile segments changes --follow`` and ``redis-dead-letters --follow``: the real
commands, as subprocesses, on a real Redis server of this module's own that a real worker
wrote to. Each prints the latest entries, then each new one once: entries a worker appends
again after Redis lost its last second (the same keys) are not printed again."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from children import popen
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.redis.changes import change_stream
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions

CONFIG = "[run]\nbatch_size = 50\n[features]\nbits = 14\n[segments]\nany = 'events >= 1'\n"
PREFIX = "follow"
#: guards the reads of a command's output (the test fails, not hangs, if a line never comes);
#: generous, since a loaded machine can take a minute to start a command
TIMEOUT = 240.0


@pytest.fixture(scope="module")
def url(server: RedisServer, lines: list[bytes]) -> str:
    """The server, once a worker applied ``lines`` under :data:`PREFIX`."""
    client = redis.Redis.from_url(server.url)
    publish(client, PREFIX, 1, lines)
    options = WorkerOptions(PREFIX, [0], batch_size=50, block_ms=50)
    config = PipelineConfig.from_toml(CONFIG)
    RedisWorker(config, RedisStore(server.url, prefix=PREFIX), client, options).run(2)
    client.close()
    return server.url


def _ctrl_c_ends_it() -> None:
    """In the command's process before it starts: SIGINT at its default, as from a terminal,
    also when the tests run with it ignored (pytest started in the background by a
    non-interactive shell): an ignored SIGINT is inherited, and Python then installs no
    KeyboardInterrupt handler, so the command would never see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """A ``liveprofile`` command whose output is read line by line, straight from the pipe.

    Its environment does not set ``PYTHONUNBUFFERED``: the command must flush each line itself.
    The pipe is read with ``os.read`` after ``select`` (a buffered ``readline`` would pull
    several lines at once into Python's buffer, where the next ``select`` does not see them)."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "liveprofile.cli", *args]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
        pipe = subprocess.PIPE
        self.proc = popen(cmd, stdout=pipe, stderr=pipe, env=env, preexec_fn=_ctrl_c_ends_it)
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self.pending = b""  # read from the pipe, not yet returned as a line

    def line(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while b"\n" not in self.pending:
            assert time.monotonic() < deadline, f"no line came (so far: {self.pending!r})"
            if select.select([self.fd], [], [], 0.5)[0]:
                chunk = os.read(self.fd, 65536)
                assert chunk, ("the command closed its output", self.proc.communicate())
                self.pending += chunk
            else:
                assert self.proc.poll() is None, self.proc.communicate()
        line, self.pending = self.pending.split(b"\n", 1)
        return dict(json.loads(line))

    def interrupt(self) -> bytes:
        """Ctrl-C: the command ends cleanly; what it printed since the last line read."""
        self.proc.send_signal(signal.SIGINT)
        rest, err = self.proc.communicate(timeout=TIMEOUT)
        assert self.proc.returncode == 0, err
        return self.pending + rest


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(url)
    yield c
    c.close()


def _again(client: redis.Redis, stream: str, count: int) -> list[dict[bytes, bytes]]:
    """Append the last ``count`` entries of ``stream`` again, as a worker that replays the
    commits Redis lost does (same fields, same keys); their fields."""
    entries = [fields for _, fields in reversed(client.xrevrange(stream, count=count))]
    for fields in entries:
        client.xadd(stream, fields)
    return entries


def test_segment_changes_follow_prints_each_change_once(url: str, client: redis.Redis) -> None:
    stream = change_stream(PREFIX)
    latest = [f for _, f in client.xrevrange(stream, count=3)][::-1]
    assert len(latest) == 3
    store = f"{url}?prefix={PREFIX}"
    command = Command("segments", "changes", "--store", store, "--follow", "--json", "--limit", "3")
    try:
        shown = [command.line() for _ in latest]
        assert [c["user_id"] for c in shown] == [f[b"user_id"].decode() for f in latest]
        assert [c["key"] for c in shown] == [f[b"key"].decode() for f in latest]
        _again(client, stream, 3)
        new = {"segment": "any", "user_id": "newcomer", "change": "enter", "ts": "1.5"}
        client.xadd(stream, {**new, "key": "elsewhere/1-0/0", "first": "1-0"})
        assert command.line() == {**new, "ts": 1.5, "key": "elsewhere/1-0/0", "first": "1-0"}
    finally:
        rest = command.interrupt()
    assert rest == b""


def test_dead_letters_follow_prints_each_dead_letter_once(url: str, client: redis.Redis) -> None:
    stream = f"{PREFIX}:deadletters"
    (last,) = [f for _, f in client.xrevrange(stream, count=1)]
    args = ["--redis", url, "--prefix", PREFIX, "--follow", "--json", "--limit", "1"]
    command = Command("redis-dead-letters", *args)
    try:
        assert command.line()["key"] == last[b"key"].decode()
        _again(client, stream, 2)
        client.xadd(stream, {"raw": "{}", "reason": "late", "source": "x", "key": "x/1-0/0"})
        assert command.line() == {"key": "x/1-0/0", "source": "x", "reason": "late", "raw": "{}"}
    finally:
        rest = command.interrupt()
    assert rest == b""


def test_follow_needs_a_redis_store(tmp_path: Path) -> None:
    args = ["segments", "changes", "--store", str(tmp_path / "p.db"), "--follow"]
    done = subprocess.run([sys.executable, "-m", "liveprofile.cli", *args], capture_output=True)
    assert done.returncode == 2
    assert b"--follow reads the change stream of a Redis store" in done.stderr


@pytest.mark.parametrize("command", [["segments", "changes"], ["redis-dead-letters"]])
def test_follow_is_in_the_help(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "liveprofile.cli", *command, "--help"], capture_output=True
    )
    assert done.returncode == 0
    assert b"--follow" in done.stdout and b"Ctrl-C" in done.stdout

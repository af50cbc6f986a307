"""Real redis-server processes for tests: each on a free port with its own data directory.

CI (``.ci/run``) makes sure ``redis-server`` is installed; tests that need to crash or restart a
server start their own with this, rather than touching the shared one on port 6379.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from children import popen

TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server subprocess; ``appendonly`` turns on the AOF (durable across restarts),
    fsynced as ``fsync`` says (``always``: every acknowledged write survives ``kill -9``)."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = True,
        port: int | None = None,
        fsync: str = "everysec",
    ) -> None:
        self.dir = directory
        self.appendonly = appendonly
        self.fsync = fsync
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes" if self.appendonly else "no", "--dir", str(self.dir)]
        args += ["--appendfsync", self.fsync]
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = popen(args, stdout=log, stderr=log)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:  # includes "loading the dataset in memory"
                assert self.proc.poll() is None, (self.dir / "redis.log").read_text()
                assert time.monotonic() < deadline, "redis-server did not come up"
                time.sleep(0.05)
        client.close()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Shut down cleanly (SIGTERM flushes the AOF) or crash (SIGKILL: the AOF is fsynced
        once a second, so the last writes may be lost, in order)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=TIMEOUT)
        self.proc = None


def running(
    directory: Path, *, appendonly: bool = True, fsync: str = "everysec"
) -> Iterator[RedisServer]:
    """A started server for a fixture to yield; stopped when the fixture ends."""
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(directory, appendonly=appendonly, fsync=fsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""A liveprofile HTTP command (``collect``, ``serve``) run as a real subprocess on a free port."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
from children import popen
from redis_server import free_port

TIMEOUT = 30.0


class CliServer:
    """``python -m liveprofile.cli COMMAND ... --port P``, up once ``/healthz`` answers 200."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "liveprofile.cli", *command, "--port", str(self.port)]
        with open(log, "wb") as fh:
            self.proc = popen(cmd, stdout=fh, stderr=fh, env={**os.environ, **env})
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{command[0]} did not come up:\n{log.read_text()}"
            time.sleep(0.1)
        self.client = httpx.Client(base_url=self.base, timeout=TIMEOUT)

    def stop(self) -> str:
        """SIGTERM: uvicorn shuts down gracefully, then re-raises the signal; returns the log."""
        self.client.close()
        self.proc.terminate()
        code = self.proc.wait(timeout=TIMEOUT)
        log = self.log.read_text()
        assert code in (0, -signal.SIGTERM), log
        return log

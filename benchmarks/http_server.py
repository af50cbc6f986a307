"""A liveprofile HTTP command (``serve``, ``collect``) started for a benchmark, up once
``/healthz`` answers.

Imported by ``collector_load.py`` and ``serving.py``; not a script, it takes no arguments.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_cli_server(
    args: list[str], env: dict[str, str], port: int, log: Path
) -> subprocess.Popen[bytes]:
    """``python -m liveprofile.cli ARGS --port PORT``, with ``env`` added to the environment."""
    cmd = [sys.executable, "-m", "liveprofile.cli", *args, "--port", str(port)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=fh, env={**os.environ, **env})
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"liveprofile {args[0]} exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"liveprofile {args[0]} did not come up:\n{log.read_text()}")
        time.sleep(0.1)

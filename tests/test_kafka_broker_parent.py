"""A broker started with ``die_with_parent`` (as the test fixtures start theirs) goes when the
process that started it is killed from outside, as a pytest run killed by ``timeout`` is: a
real broker, started by a real Python process that is then killed with SIGKILL. So does one
started by ``liveprofile kafka start --die-with-parent`` when the process that ran the command
is killed, long after the command ended."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis_server import free_port

from liveprofile.kafka.broker import Broker

#: guards the wait for the broker to go (the test fails, not hangs)
TIMEOUT = 60.0

STARTS = """
import sys, time
from liveprofile.kafka.broker import Broker
broker = Broker(sys.argv[1], port=int(sys.argv[2]), controller_port=int(sys.argv[3]),
                die_with_parent=True)
print(broker.start(), flush=True)
time.sleep(600)
"""

#: runs ``liveprofile kafka start --die-with-parent`` (to its end), prints its answer, sleeps
STARTS_BY_COMMAND = """
import subprocess, sys, time
command = [sys.executable, "-m", "liveprofile.cli", "kafka", "start", "--data-dir", sys.argv[1],
           "--port", sys.argv[2], "--controller-port", sys.argv[3], "--die-with-parent"]
done = subprocess.run(command, capture_output=True, text=True)
print(done.stdout.strip().splitlines()[-1] if done.returncode == 0 else done.stderr, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (gone, or a zombie its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True


@pytest.mark.parametrize("starts", [STARTS, STARTS_BY_COMMAND], ids=["broker", "command"])
def test_a_broker_dies_with_the_process_that_started_it(tmp_path: Path, starts: str) -> None:
    data, port, controller = tmp_path / "kafka", free_port(), free_port()
    args = [sys.executable, "-c", starts, str(data), str(port), str(controller)]
    parent = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    broker = Broker(data, port=port, controller_port=controller)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline().strip()
        if line.startswith(b"{"):  # the command's answer
            line = str(json.loads(line)["pid"]).encode()
        assert line.isdigit(), (line, parent.communicate())
        pid = int(line)
        assert broker.pid() == pid
        parent.kill()  # SIGKILL: nothing of the parent's runs after
        parent.wait()
        deadline = time.monotonic() + TIMEOUT
        while not _gone(pid):
            assert time.monotonic() < deadline, "the broker outlived the process that started it"
            time.sleep(0.1)
    finally:
        parent.kill()
        parent.communicate()
        broker.stop(kill=True)  # one that outlived it

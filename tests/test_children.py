"""Children started through ``children.popen`` die with the process that started them when it
is killed from outside (SIGKILL: nothing of it runs after), as a pytest worker killed by a CI
``timeout`` is; also when the thread that asked for the child has ended long before. The parent
is a real Python process that the test starts and kills; the child a real ``sleep``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

#: guards the waits (the test fails, not hangs)
TIMEOUT = 60.0

#: the parent: starts ``sleep`` through children.popen (from the main thread, from a thread
#: that ends at once, or, for contrast, with the death signal set by that thread itself),
#: waits until that thread is gone from the kernel too, prints the child's pid, then sleeps
PARENT = """
import os, subprocess, sys, threading, time
import children
from liveprofile.kafka.broker import parent_death_signal

how = sys.argv[1]
started = []
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # not the test's pipes

def start():
    if how == "own-thread":
        start = parent_death_signal(os.getpid())
        started.append(subprocess.Popen(["sleep", "600"], preexec_fn=start, **quiet))
    else:
        started.append(children.popen(["sleep", "600"], **quiet))

if how == "main":
    start()
else:
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    while os.path.exists(f"/proc/self/task/{thread.native_id}"):  # the kernel's thread too
        time.sleep(0.01)
print(started[0].pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (gone, or a zombie its new parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except (OSError, IndexError):
        return True


def _wait_gone(pid: int, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not _gone(pid):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _parent(how: str) -> tuple[subprocess.Popen[bytes], int]:
    """The parent process, once it started its child; and the child's pid."""
    path = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, how], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    if not line.strip().isdigit():
        parent.kill()
        raise AssertionError(parent.communicate())
    return parent, int(line)


@pytest.mark.parametrize("how", ["main", "thread"])
def test_a_child_dies_when_its_parent_is_killed(how: str) -> None:
    parent, child = _parent(how)
    try:
        assert not _gone(child), "the child ended before its parent"
        parent.kill()
        parent.wait()
        _wait_gone(child, "the child outlived the process that started it")
    finally:
        if not _gone(child):  # one that outlived its parent
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.communicate()


def test_a_child_forked_by_a_thread_dies_with_that_thread() -> None:
    """Why one long-lived thread forks every child: the death signal is tied to the forking
    thread, so a child its short-lived thread forked is gone once that thread has ended,
    while its process still runs."""
    parent, child = _parent("own-thread")
    try:
        _wait_gone(child, "the child outlived the thread that forked it")
        assert parent.poll() is None
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.communicate()

"""Subprocesses of the tests that die with the test process, however it ends: a pytest worker
killed from outside (a CI ``timeout``, an xdist worker gone) leaves no server or worker behind
holding ports, files and CPU.

Each child gets SIGKILL when the thread that forked it ends (Linux ``PR_SET_PDEATHSIG``, set by
:func:`liveprofile.kafka.broker.parent_death_signal` between the fork and the exec). A child
forked by a short-lived thread would then die with that thread, so every child is forked by one
long-lived spawner thread of the process, which runs ``Popen`` for the callers; it ends only
with the process.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from concurrent.futures import Future
from typing import Any

from liveprofile.kafka.broker import parent_death_signal

_Request = tuple[tuple[Any, ...], dict[str, Any], "Future[subprocess.Popen[bytes]]"]


class _Spawner:
    """The thread that forks every child of this process (see the module)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="children-spawner", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            args, kwargs, result = self.requests.get()
            if not result.set_running_or_notify_cancel():
                continue
            tie = parent_death_signal(self.pid)
            then = kwargs.pop("preexec_fn", None)

            def prepare(tie: Any = tie, then: Any = then) -> None:
                tie()
                if then is not None:
                    then()

            try:
                proc = subprocess.Popen(*args, preexec_fn=prepare, **kwargs)
            except BaseException as e:  # handed to the caller, raised there
                result.set_exception(e)
            else:
                result.set_result(proc)


_spawner: _Spawner | None = None
_lock = threading.Lock()


def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(*args, **kwargs)`` of a child that dies with this process, from
    whichever thread calls it (a ``preexec_fn`` given runs after the death signal is set).

    >>> import signal
    >>> p = popen(["sleep", "60"])
    >>> p.send_signal(signal.SIGTERM)
    >>> p.wait()
    -15
    """
    global _spawner
    with _lock:
        if _spawner is None or _spawner.pid != os.getpid():  # none yet, or a forked copy
            _spawner = _Spawner()
        spawner = _spawner
    result: Future[subprocess.Popen[bytes]] = Future()
    spawner.requests.put((args, kwargs, result))
    return result.result()

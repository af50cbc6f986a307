"""A standalone Flink cluster on this machine, started from the PyFlink distribution.

The ``apache-flink`` wheel ships Flink's ``bin/`` and ``lib/``; :class:`StandaloneCluster` writes
a ``config.yaml`` of its own (spare ports, small memory, fast heartbeats so that a lost
taskmanager is noticed within seconds) into a directory and runs one jobmanager and N
taskmanagers in the foreground of child processes, so each can be stopped or killed alone.
With ``die_with_parent`` (test fixtures) each is killed when the thread that started it ends,
its process killed from outside included (Linux ``PR_SET_PDEATHSIG``: Flink's scripts ``exec``
the JVM, which keeps the setting).
Jobs reach it through :attr:`FlinkSettings.jobmanager <liveprofile.flink.job.FlinkSettings>`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from liveprofile.flink.job import FlinkError, FlinkSettings, settings_json
from liveprofile.kafka.broker import free_port, parent_death_signal


def flink_home() -> Path:
    """The Flink distribution inside the installed ``pyflink`` package."""
    import pyflink

    return Path(pyflink.__file__).parent


class StandaloneCluster:
    """One jobmanager and ``taskmanagers`` taskmanagers of ``slots`` slots each."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        taskmanagers: int = 2,
        slots: int = 2,
        *,
        die_with_parent: bool = False,
    ):
        self.directory = Path(directory)
        #: kill the jobmanager and taskmanagers when the thread that starts each ends
        self.die_with_parent = die_with_parent
        self.slots = slots
        self.rest_port = free_port()
        self.rpc_port = free_port()
        self.jobmanager: subprocess.Popen[bytes] | None = None
        self.taskmanagers: list[subprocess.Popen[bytes]] = []
        self._count = taskmanagers

    @property
    def rest(self) -> str:
        return f"127.0.0.1:{self.rest_port}"

    def _config(self) -> str:
        home = flink_home()
        opts = ""
        for line in (home / "conf" / "config.yaml").read_text().splitlines():
            if line.strip().startswith("all:"):
                opts = line.split("all:", 1)[1].strip()
        entries = {
            "env.java.opts.all": opts,
            "jobmanager.bind-host": "localhost",
            "jobmanager.rpc.address": "localhost",
            "jobmanager.rpc.port": self.rpc_port,
            "jobmanager.memory.process.size": "700m",
            "taskmanager.bind-host": "localhost",
            "taskmanager.host": "localhost",
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": "1400m",
            "rest.address": "localhost",
            "rest.bind-address": "localhost",
            "rest.port": self.rest_port,
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 5000,
            "taskmanager.load-balance.mode": "slots",  # a subtask per taskmanager
            "python.executable": sys.executable,
        }
        return "".join(f"{k}: {v}\n" for k, v in entries.items())

    def _spawn(self, script: str, name: str) -> subprocess.Popen[bytes]:
        conf = self.directory / "conf"
        env = {**os.environ, "FLINK_CONF_DIR": str(conf), "FLINK_LOG_DIR": str(self.directory)}
        env["FLINK_HOME"] = str(flink_home())
        env["FLINK_LIB_DIR"] = str(self.directory / "lib")
        log = open(self.directory / f"{name}.out", "ab")  # noqa: SIM115 (the child's output)
        with log:
            return subprocess.Popen(
                ["bash", str(flink_home() / "bin" / script), "start-foreground"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=parent_death_signal(os.getpid()) if self.die_with_parent else None,
            )

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the jobmanager and the taskmanagers; wait until all slots are registered."""
        conf = self.directory / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "config.yaml").write_text(self._config())
        for name in ("log4j-console.properties", "logback-console.xml"):
            (conf / name).write_bytes((flink_home() / "conf" / name).read_bytes())
        # Flink's lib/ plus its Python operators (opt/flink-python), which the wheel's lib/ lacks
        lib = self.directory / "lib"
        lib.mkdir(exist_ok=True)
        for jar in [
            *(flink_home() / "lib").glob("*.jar"),
            *(flink_home() / "opt").glob("flink-python-*.jar"),
        ]:
            if not (lib / jar.name).exists():
                (lib / jar.name).symlink_to(jar)
        self.jobmanager = self._spawn("jobmanager.sh", "jobmanager")
        for i in range(self._count):
            self.add_taskmanager(f"taskmanager-{i}")
        self.wait_slots(self._count * self.slots, timeout_s)

    def add_taskmanager(self, name: str) -> subprocess.Popen[bytes]:
        proc = self._spawn("taskmanager.sh", name)
        self.taskmanagers.append(proc)
        return proc

    def overview(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.rest}/overview", timeout=5) as answer:
            data: dict[str, Any] = json.load(answer)
        return data

    def job(self, job_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.rest}/jobs/{job_id}", timeout=5) as answer:
            data: dict[str, Any] = json.load(answer)
        return data

    def submit(self, settings: FlinkSettings) -> str:
        """Submit the job with ``flink run -d -py`` (detached); returns its job id."""
        env = {**os.environ, "FLINK_CONF_DIR": str(self.directory / "conf")}
        env["FLINK_HOME"] = str(flink_home())
        cmd = ["bash", str(flink_home() / "bin" / "flink"), "run", "-d", "-m", self.rest]
        cmd += ["-pyclientexec", sys.executable, "-pyexec", sys.executable]
        # a driver importing the job module: functions the job ships are then pickled with
        # references to liveprofile.flink.job, not to a __main__ the workers do not have
        driver = self.directory / "submit_job.py"
        driver.write_text("from liveprofile.flink.job import main\n\nmain()\n")
        cmd += ["-py", str(driver), settings_json(settings)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        found = re.search(r"JobID ([0-9a-f]{32})", done.stdout + done.stderr)
        if done.returncode != 0 or found is None:
            out = done.stdout + done.stderr
            start = max(0, out.find("Traceback"))  # the job script's error, when it has one
            raise FlinkError(f"flink run failed: {out[start : start + 3000]}")
        return found.group(1)

    def status(self, job_id: str) -> str:
        """The job's state (RUNNING, RESTARTING, FAILED, ...)."""
        return str(self.job(job_id)["state"])

    def cancel(self, job_id: str) -> None:
        request = urllib.request.Request(
            f"http://{self.rest}/jobs/{job_id}?mode=cancel", method="PATCH"
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def checkpoints(self, job_id: str) -> int:
        """Checkpoints of the job completed so far."""
        url = f"http://{self.rest}/jobs/{job_id}/checkpoints"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(json.load(answer)["counts"]["completed"])

    def restarts(self, job_id: str) -> int:
        """Times the job has restarted (failed over) so far."""
        url = f"http://{self.rest}/jobs/{job_id}/exceptions"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return len(json.load(answer).get("exceptionHistory", {}).get("entries", []))

    def wait_slots(self, slots: int, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.overview().get("slots-total", 0) >= slots:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise FlinkError(f"the cluster at {self.rest} did not offer {slots} slots")
            time.sleep(0.5)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a jobmanager or taskmanager (its process group) and reap it."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def stop(self) -> None:
        for proc in [*self.taskmanagers, *([self.jobmanager] if self.jobmanager else [])]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.kill(proc)

"""A local Apache Kafka broker in KRaft mode (one process as broker and controller, no ZooKeeper).

The broker's jars come from Maven Central through the POM next to this module
(``pom.xml``: ``org.apache.kafka:kafka_2.13`` and a log4j2 binding), copied once by
``mvn dependency:copy-dependencies`` into a cache directory (``$LIVEPROFILE_KAFKA_JARS``, default
``~/.cache/liveprofile/kafka-VERSION``). :class:`Broker` writes ``server.properties`` into its
data directory, formats the KRaft storage on first start, runs ``java kafka.Kafka`` detached
(its pid in ``broker.pid``, its output in ``broker.log``) and waits until the broker answers.
With ``die_with_parent`` (test fixtures) the broker is killed when the thread that started it
ends, its process killed from outside included (Linux ``PR_SET_PDEATHSIG``). ``liveprofile
kafka start`` leaves it running after the command; with ``--die-with-parent`` (``dies_with``:
the command's parent process) a small watcher process kills it when that process ends.

>>> b = Broker("/tmp/lp-kafka-doc", port=19092)
>>> b.bootstrap, b.controller_port
('127.0.0.1:19092', 19093)
>>> b.running()
False
"""

from __future__ import annotations

import base64
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liveprofile.errors import LiveprofileError
from liveprofile.kafka.maven import copy_dependencies

#: the Kafka release the POM resolves (keep in step with pom.xml)
KAFKA_VERSION = "4.1.1"
POM = Path(__file__).with_name("pom.xml")
_quiet = logging.getLogger("liveprofile.kafka.broker")


class KafkaError(LiveprofileError):
    """The broker cannot be prepared, started or reached, or Kafka refused a request."""

    exit_code = 69  # EX_UNAVAILABLE


def jar_dir() -> Path:
    """Where the broker's jars are cached (``$LIVEPROFILE_KAFKA_JARS`` overrides)."""
    env = os.environ.get("LIVEPROFILE_KAFKA_JARS")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "liveprofile" / f"kafka-{KAFKA_VERSION}"


def resolve_jars(target: Path | None = None) -> Path:
    """The directory of the broker's jars, resolved from Maven Central the first time."""
    return copy_dependencies(
        POM, target or jar_dir(), f"kafka_2.13-{KAFKA_VERSION}.jar", "the Kafka jars"
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for tests and throwaway brokers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


class Broker:
    """One KRaft broker+controller on 127.0.0.1: ``port`` for clients, ``port + 1`` for the
    controller (or ``controller_port``), all files under ``data_dir``."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int = 9092,
        controller_port: int | None = None,
        partitions: int = 4,
        heap_mb: int = 512,
        die_with_parent: bool = False,
        dies_with: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.controller_port = controller_port or port + 1
        self.partitions = partitions
        self.heap_mb = heap_mb
        #: kill the broker when the thread that starts it ends (see the module)
        self.die_with_parent = die_with_parent
        #: kill the broker when this process ends, whichever it is (a watcher waits on it)
        self.dies_with = dies_with
        #: the broker process when this object started it (kept: it is reaped on stop)
        self._proc: subprocess.Popen[bytes] | None = None
        #: the watcher of ``dies_with`` when this object started it (it ends with the broker)
        self._watcher: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    def pid(self) -> int | None:
        """The broker's process id when it runs, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        try:  # a recycled pid is not our broker
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return pid
        return pid if b"kafka.Kafka" in cmdline else None

    def running(self) -> bool:
        return self.pid() is not None

    def _properties(self) -> str:
        c = self.controller_port
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{c}",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{c}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={self.data_dir / 'logs'}",
                f"num.partitions={self.partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=8",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=4",
                "share.coordinator.state.topic.replication.factor=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "",
            ]
        )

    def start(self, timeout_s: float = 60.0) -> int:
        """Start the broker (formatting its storage the first time); returns its pid."""
        pid = self.pid()
        if pid is not None:
            return pid
        java = shutil.which("java")
        if java is None:
            raise KafkaError("java (JDK 17 or newer) is needed to run the Kafka broker")
        jars = resolve_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        props.write_text(self._properties())
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(_LOG4J.format(log=self.data_dir / "server.log", level="INFO"))
        base = [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{jars}/*"]
        if not (self.data_dir / "logs" / "meta.properties").is_file():
            cluster = "-"
            while cluster.startswith("-"):  # kafka-storage would read "-..." as an option
                cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            fmt = [*base, "kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(props)]
            done = subprocess.run(fmt, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise KafkaError(f"cannot format {self.data_dir}: {done.stdout}{done.stderr}")
        watched = _pidfd(self.dies_with) if self.dies_with is not None else None
        heap = f"-Xmx{self.heap_mb}m"
        cmd = [*base[:1], heap, "-Xms128m", "-XX:+UseSerialGC", *base[1:], "kafka.Kafka"]
        try:
            with open(self.log_file, "ab") as out:
                proc = subprocess.Popen(
                    [*cmd, str(props)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=parent_death_signal(os.getpid()) if self.die_with_parent else None,
                )
        except BaseException:
            if watched is not None:
                os.close(watched)
            raise
        self._proc = proc
        if watched is not None:
            self._watcher = _watch(watched, proc.pid)
        self.pid_file.write_text(str(proc.pid))
        self._wait_ready(proc, timeout_s)
        return proc.pid

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:  # the port first: a client would log every refusal
            if proc.poll() is not None:
                raise KafkaError(f"the broker exited ({proc.returncode}); see {self.log_file}")
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.1)
        settings: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "logger": _quiet}
        admin = AdminClient(settings)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise KafkaError(f"the broker exited ({proc.returncode}); see {self.log_file}")
            try:
                meta = admin.list_topics(timeout=1.0)
                if meta.brokers:
                    return
            except Exception:
                time.sleep(0.2)
        raise KafkaError(f"the broker did not answer within {timeout_s:.0f} s; see {self.log_file}")

    def stop(self, timeout_s: float = 30.0, *, kill: bool = False) -> bool:
        """Stop the broker (SIGTERM, SIGKILL after ``timeout_s``; ``kill``: SIGKILL at once).
        Returns whether one was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        if self._proc is not None and self._proc.pid == pid:
            self._proc.wait()
        self._proc = None
        if self._watcher is not None:
            self._watcher.wait()  # it ends as the broker does
        self._watcher = None
        return True


#: ``prctl`` option: the signal a process gets when the thread that forked it ends
PR_SET_PDEATHSIG = 1


def parent_death_signal(parent: int) -> Callable[[], None]:
    """What a child runs before it starts its program, so that it gets SIGKILL when the thread
    that forked it in ``parent`` ends (or at once, if ``parent`` has already gone)."""
    if not sys.platform.startswith("linux"):
        raise KafkaError("die_with_parent needs Linux (prctl PR_SET_PDEATHSIG)")
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, before the fork

    def tie() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # died between the fork and the prctl
            os._exit(1)

    return tie


def _pidfd(pid: int) -> int:
    """A pid file descriptor of ``pid`` (readable once the process ends, whoever reaps it)."""
    if not sys.platform.startswith("linux"):
        raise KafkaError("dies_with needs Linux (pidfd_open)")
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        raise KafkaError(f"process {pid}, which the broker is to die with, has ended") from None


#: the watcher: waits until the watched process or the broker ends (their pidfds are its
#: arguments); kills the broker when the watched one ended first
_WATCHER = """
import select, signal, sys
watched, broker = int(sys.argv[1]), int(sys.argv[2])
if broker not in select.select([watched, broker], [], [])[0]:
    signal.pidfd_send_signal(broker, signal.SIGKILL)
"""


def _watch(watched: int, broker: int) -> subprocess.Popen[bytes]:
    """Start, detached, a watcher that kills ``broker`` (a pid) when the process of the pidfd
    ``watched`` ends; the watcher ends with the broker. Closes ``watched`` here."""
    try:
        fd = os.pidfd_open(broker)
    except BaseException:
        os.close(watched)
        raise
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _WATCHER, str(watched), str(fd)],
            pass_fds=(watched, fd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(fd)
        os.close(watched)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (reaping it when it is our exited child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return True
    return state != "Z"

"""A worker that the group gives no partition: three ``liveprofile worker`` processes in one
group on a topic of two partitions (a real broker, a real Redis). The third waits without
spinning: over a few seconds its CPU time is a small part of the wall time; and ``liveprofile
status --kafka --json`` lists it as a member, with no partitions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import kafka_helpers as kh
from kafka_helpers import CONFIG
from redis_server import RedisServer

from liveprofile.kafka.broker import Broker, KafkaError
from liveprofile.kafka.producer import KafkaPublisher
from liveprofile.kafka.status import kafka_status

TOPIC = "idlemember"
#: seconds over which the idle worker's CPU time is measured
WINDOW = 3.0


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _assignment(broker: Broker) -> dict[str, list[int]]:
    """Each member's partitions, by client id (empty while the coordinator cannot tell)."""
    try:
        status = kafka_status(broker.bootstrap, TOPIC, TOPIC)
    except KafkaError:
        return {}
    return {m.client_id: sorted(m.partitions) for m in status.members}


def test_a_member_without_partitions_waits_idle(
    broker: Broker, server: RedisServer, lines: list[bytes], tmp_path: Path
) -> None:
    KafkaPublisher(broker.bootstrap, TOPIC, partitions=2, validate=False).extend(lines)
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG)
    names = ["w1", "w2", "w3"]
    logs = {n: tmp_path / f"{n}.log" for n in names}
    procs = {n: kh.worker(broker, server.url, TOPIC, config, logs[n], n) for n in names}
    try:
        seen: list[dict[str, list[int]]] = []

        def settled() -> bool:
            """Every member listed, one partition each for two of them, and the same view twice
            running (a cooperative rebalance passes through views where one member still holds
            both partitions, or a partition has no owner)."""
            a = _assignment(broker)
            whole = a.keys() == set(names) and sorted(p for ps in a.values() for p in ps) == [0, 1]
            whole = whole and sorted(len(ps) for ps in a.values()) == [0, 1, 1]
            stable = whole and bool(seen) and seen[-1] == a
            seen.append(a)
            return stable

        kh.wait("three members sharing the two partitions", settled)
        kh.wait("the workers to catch up", kh.caught_up(broker, server.url, TOPIC))
        seen.clear()
        kh.wait("the group to settle after catching up", settled)
        before = seen[-1]
        (idle,) = [n for n, ps in before.items() if not ps]
        pid = procs[idle].pid
        cpu, wall = _cpu_seconds(pid), time.monotonic()
        time.sleep(WINDOW)
        cpu, wall = _cpu_seconds(pid) - cpu, time.monotonic() - wall
        assert _assignment(broker) == before, "the group rebalanced while measuring"
        assert cpu < 0.3 * wall, f"the idle worker used {cpu:.2f} s of CPU in {wall:.2f} s"

        args = ["status", "--kafka", broker.bootstrap, "--topic", TOPIC, "--group", TOPIC]
        args += ["--redis", server.url, "--prefix", TOPIC, "--json"]
        done = subprocess.run(
            [sys.executable, "-m", "liveprofile.cli", *args], capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
        members = {m["client_id"]: m["partitions"] for m in json.loads(done.stdout)["members"]}
        assert members.keys() == set(names)
        assert members[idle] == []
        for n in names:
            kh.stop(procs[n], logs[n])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

"""Helpers of the Kafka tests: publishing, running workers, and reading a store's state."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import redis
from children import popen

from liveprofile.config import PipelineConfig
from liveprofile.engine.state import Checkpoint
from liveprofile.events.deadletter import DeadLetter
from liveprofile.kafka.broker import Broker, KafkaError
from liveprofile.kafka.partition import partition_scope
from liveprofile.kafka.producer import KafkaPublisher, record_key
from liveprofile.kafka.status import kafka_status
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.profile.state import decode_profile
from liveprofile.redis.fence import FencedRedisStore

#: per-partition models: every partition's state is then a function of its records alone, so
#: a disturbed run equals an uninterrupted one exactly (the shared model's tests are in
#: test_kafka_shared.py)
CONFIG = """
[run]
batch_size = 200
shared_model = false
[features]
bits = 14
"""
#: one model per task shared by every partition and worker (the default)
SHARED_CONFIG = CONFIG.replace("shared_model = false", "shared_model = true")
TIMEOUT = 90.0
PARTITIONS = 3


def raw_snapshot(client: Any, prefix: str) -> dict[bytes, Any]:
    """Every key under ``prefix`` and its value (hashes and strings as read, other kinds
    dumped)."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = client.type(key)
        if kind == b"hash":
            out[key[len(prefix) :]] = client.hgetall(key)
        elif kind == b"string":
            out[key[len(prefix) :]] = client.get(key)
        else:
            out[key[len(prefix) :]] = (kind, client.dump(key))
    return out


def publish(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    publisher = KafkaPublisher(bootstrap, topic, partitions=PARTITIONS, validate=False)
    publisher.extend(lines)


def snapshot(url: str, prefix: str, topic: str) -> dict[str, Any]:
    """What must not depend on how the run was disturbed: profiles, each partition's model,
    metrics, item statistics and counts, the offsets, and the dead letters."""
    client = redis.Redis.from_url(url)
    try:
        profiles = {
            k.decode(): decode_profile(bytes(v))
            for k, v in client.hgetall(f"{prefix}:profile").items()
        }
        letters = {
            k.decode(): msgspec.json.decode(v, type=DeadLetter)
            for k, v in client.hgetall(f"{prefix}:deadletter").items()
        }
        meta = {k.decode(): bytes(v) for k, v in client.hgetall(f"{prefix}:meta").items()}
        parts: dict[int, Any] = {}
        for p in range(PARTITIONS):
            scope = partition_scope(topic, p)
            ckpt = msgspec.msgpack.decode(meta[f"checkpoint@{scope}"], type=Checkpoint)
            items = client.hgetall(f"{prefix}:item@{scope}")
            parts[p] = {
                "counts": (ckpt.events, ckpt.duplicates, ckpt.dead_letters, ckpt.watermark),
                "offsets": ckpt.offsets,
                "models": {
                    k: v
                    for k, v in meta.items()
                    if k.endswith(f"@{scope}") and k.startswith(("model/", "metrics/"))
                },
                "items": {k.decode(): bytes(v) for k, v in items.items()},
            }
    finally:
        client.close()
    return {"profiles": profiles, "dead_letters": letters, "partitions": parts}


def reference(broker: Broker, url: str, topic: str) -> dict[str, Any]:
    """One worker, never disturbed, over the whole topic, each commit made before the next
    batch is read (no overlap)."""
    config = PipelineConfig.from_toml(CONFIG)
    store = FencedRedisStore(url, prefix=f"ref-{topic}")
    worker = KafkaWorker(
        config, store, broker.bootstrap, topic, f"ref-{topic}", batch_size=200, overlap=False
    )
    stats = worker.run(max_idle_polls=10)
    store.close()
    assert stats.events > 0
    return snapshot(url, f"ref-{topic}", topic)


def worker(
    broker: Broker, url: str, topic: str, config: Path, log: Path, name: str
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "liveprofile.cli", "worker", "--kafka", broker.bootstrap]
    args += ["--topic", topic, "--group", topic, "--redis", url, "--prefix", topic]
    args += ["--config", str(config), "--batch-size", "10", "--max-batch-delay", "0.05"]
    args += ["--consumer", name]
    with open(log, "ab") as err, open(log.with_suffix(".out"), "ab") as out:
        return popen(args, stdout=out, stderr=err)


def applied(log: Path) -> int:
    """Events a worker reports having applied (its last line of output)."""
    return int(json.loads(log.with_suffix(".out").read_text().splitlines()[-1])["events"])


def committed(url: str, prefix: str, topic: str) -> int:
    """Records (events, duplicates and dead letters) committed over all partitions."""
    client = redis.Redis.from_url(url)
    try:
        total = 0
        for p in range(PARTITIONS):
            blob = client.hget(f"{prefix}:meta", f"checkpoint@{partition_scope(topic, p)}")
            if blob is not None:
                c = msgspec.msgpack.decode(bytes(blob), type=Checkpoint)
                total += c.events + c.duplicates + c.dead_letters
        return total
    finally:
        client.close()


def wait(what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def caught_up(broker: Broker, url: str, topic: str) -> Callable[[], bool]:
    store = FencedRedisStore(url, prefix=topic)

    def check() -> bool:
        try:
            status = kafka_status(broker.bootstrap, topic, topic, store)
        except KafkaError:  # e.g. the group coordinator still loading on a new broker
            return False
        return all((p.store_offset or 0) == p.end_offset for p in status.partitions)

    return check


def stop(proc: subprocess.Popen[bytes], log: Path, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    code = proc.wait(timeout=TIMEOUT)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), log.read_text()


def assert_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["partitions"] == want["partitions"]
    assert got["dead_letters"] == want["dead_letters"] and got["dead_letters"]
    assert got["profiles"].keys() == want["profiles"].keys()
    differ = [u for u, p in got["profiles"].items() if p != want["profiles"][u]]
    assert not differ, f"{len(differ)} profiles differ, e.g. {differ[0]}"


def members(broker: Broker, topic: str) -> int:
    """Members of the group that hold partitions (0 while the coordinator cannot tell)."""
    try:
        status = kafka_status(broker.bootstrap, topic, topic)
    except KafkaError:
        return 0
    return sum(1 for m in status.members if m.partitions)


def no_user(lines: list[bytes]) -> int:
    return sum(1 for x in lines if x.strip() and record_key(x.strip()) is None)

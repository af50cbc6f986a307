"""The shared model (``run.shared_model``) with a real KRaft broker and real worker processes.

* One partition, one worker killed with SIGKILL twice and restarted: the shared model, the
  profiles (with their scores) and the metrics equal an uninterrupted worker's.
* Three partitions, two workers at once, one of them killed with SIGKILL and restarted: each
  batch's changes are merged exactly once, so the model's count of learned examples equals
  the examples the partitions' metrics counted, and an uninterrupted single worker's count.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import kafka_helpers as kh
import msgspec
import pytest
import redis
from kafka_helpers import SHARED_CONFIG
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.engine.state import Checkpoint
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import partition_scope
from liveprofile.kafka.producer import KafkaPublisher
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.stored import shared_learned
from liveprofile.profile.state import decode_profile
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import model_namespace

TASKS = [t.name for t in PipelineConfig.from_toml(SHARED_CONFIG).tasks]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "pipeline.toml"
    path.write_text(SHARED_CONFIG)
    return path


def publish(broker: Broker, topic: str, lines: list[bytes], partitions: int) -> None:
    KafkaPublisher(broker.bootstrap, topic, partitions=partitions, validate=False).extend(lines)


def snapshot(url: str, prefix: str, topic: str, partitions: int) -> dict[str, Any]:
    """The shared models (every coordinate's bytes), the profiles, and per partition the
    checkpoint's counts and the metrics."""
    client = redis.Redis.from_url(url)
    try:
        models = {t: client.hgetall(f"{prefix}:{model_namespace(t)}") for t in TASKS}
        profiles = {
            k.decode(): decode_profile(bytes(v))
            for k, v in client.hgetall(f"{prefix}:profile").items()
        }
        meta = {k.decode(): bytes(v) for k, v in client.hgetall(f"{prefix}:meta").items()}
    finally:
        client.close()
    parts = {}
    for p in range(partitions):
        scope = partition_scope(topic, p)
        ckpt = msgspec.msgpack.decode(meta[f"checkpoint@{scope}"], type=Checkpoint)
        metrics = {t: meta.get(f"metrics/{t}@{scope}") for t in TASKS}
        parts[p] = {"counts": (ckpt.events, ckpt.dead_letters, ckpt.offsets), "metrics": metrics}
    return {"models": models, "profiles": profiles, "partitions": parts}


def reference(broker: Broker, url: str, topic: str, partitions: int) -> dict[str, Any]:
    config = PipelineConfig.from_toml(SHARED_CONFIG)
    store = FencedRedisStore(url, prefix=f"ref-{topic}")
    worker = KafkaWorker(config, store, broker.bootstrap, topic, f"ref-{topic}", batch_size=200)
    assert worker.run(max_idle_polls=10).events > 0
    store.close()
    return snapshot(url, f"ref-{topic}", topic, partitions)


def learned(url: str, prefix: str, topic: str, partitions: int) -> dict[str, tuple[int, int]]:
    """Per task: the shared model's count of learned examples, and the examples its
    partitions' metrics counted."""
    store = FencedRedisStore(url, prefix=prefix)
    out = {}
    for task in TASKS:
        counted = 0
        for p in range(partitions):
            blob = store.get_meta(f"metrics/{task}@{partition_scope(topic, p)}")
            counted += 0 if blob is None else Prequential.from_bytes(blob).n
        out[task] = (shared_learned(store, task), counted)
    store.close()
    return out


def test_one_worker_killed_twice_equals_an_uninterrupted_run(
    broker: Broker, server: RedisServer, lines: list[bytes], config_file: Path, tmp_path: Path
) -> None:
    topic = "shared-killed"
    half = len(lines) // 2
    publish(broker, topic, lines[:half], 1)
    log = tmp_path / "worker.log"
    for round_ in range(2):
        proc = kh.worker(broker, server.url, topic, config_file, log, "w1")
        done = kh.committed(server.url, topic, topic)
        kh.wait("commits", lambda d=done: kh.committed(server.url, topic, topic) > d + 40)
        kh.stop(proc, log, signal.SIGKILL)
        assert kh.committed(server.url, topic, topic) < len(lines)  # killed mid-stream
        if round_ == 0:
            publish(broker, topic, lines[half:], 1)
    proc = kh.worker(broker, server.url, topic, config_file, log, "w1")
    kh.wait("the worker to catch up", kh.caught_up(broker, server.url, topic))
    kh.stop(proc, log)
    got, want = snapshot(server.url, topic, topic, 1), reference(broker, server.url, topic, 1)
    assert got["models"]["convert"] and got["models"] == want["models"]
    assert got["partitions"] == want["partitions"]
    assert got["profiles"].keys() == want["profiles"].keys()
    differ = [u for u, p in got["profiles"].items() if p != want["profiles"][u]]
    assert not differ, f"{len(differ)} profiles differ, e.g. {differ[0]}"


def test_two_workers_merge_each_batch_once(
    broker: Broker, server: RedisServer, lines: list[bytes], config_file: Path, tmp_path: Path
) -> None:
    topic = "shared-two"
    third = len(lines) // 3
    publish(broker, topic, lines[:third], kh.PARTITIONS)
    log1, log2 = tmp_path / "w1.log", tmp_path / "w2.log"
    first = kh.worker(broker, server.url, topic, config_file, log1, "w1")
    second = kh.worker(broker, server.url, topic, config_file, log2, "w2")
    kh.wait("two members", lambda: kh.members(broker, topic) == 2)
    publish(broker, topic, lines[third : 2 * third], kh.PARTITIONS)
    done = kh.committed(server.url, topic, topic)
    kh.wait("commits", lambda: kh.committed(server.url, topic, topic) > done + 20)
    kh.stop(second, log2, signal.SIGKILL)  # mid-stream: its last batches are applied again
    second = kh.worker(broker, server.url, topic, config_file, log2, "w2")
    kh.wait("two members again", lambda: kh.members(broker, topic) == 2)
    publish(broker, topic, lines[2 * third :], kh.PARTITIONS)
    kh.wait("both workers to catch up", kh.caught_up(broker, server.url, topic))
    kh.stop(second, log2)
    kh.stop(first, log1)
    assert kh.applied(log1) > 0 and kh.applied(log2) > 0
    got = learned(server.url, topic, topic, kh.PARTITIONS)
    reference(broker, server.url, topic, kh.PARTITIONS)
    want = learned(server.url, f"ref-{topic}", topic, kh.PARTITIONS)
    assert got["convert"][0] > 0
    for task, (count, counted) in got.items():
        assert count == counted == want[task][0] == want[task][1], (task, got, want)

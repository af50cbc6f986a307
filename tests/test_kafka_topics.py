"""A topic's partition count is set when it is created: a worker started before its topic
exists and a publisher asking for another count than the topic has both say so."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka.admin import AdminClient
from kafka_helpers import CONFIG, TIMEOUT

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import RunStats
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.producer import KafkaPublisher, ensure_topics
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.redis.fence import FencedRedisStore

URL = "redis://127.0.0.1:6379/0"
#: a worker without partitions assigned never counts idle polls: have it stop at once
STOPPED = threading.Event()
STOPPED.set()
EVENT = b'{"event_id": "e1", "user_id": "u1", "type": "view", "ts": 1.0}'


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def start_and_stop(broker: Broker, topic: str) -> RunStats:
    """A worker on ``topic`` that checks it, subscribes and stops (its store's keys deleted)."""
    prefix = f"topics-{topic}"
    store = FencedRedisStore(URL, prefix=prefix)
    config = PipelineConfig.from_toml(CONFIG)
    worker = KafkaWorker(config, store, broker.bootstrap, topic, topic, max_batch_delay=0.1)
    try:
        return worker.run(stop=STOPPED)
    finally:
        store.close()
        client = redis.Redis.from_url(URL)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()


def test_worker_warns_when_its_topic_does_not_exist_yet(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="liveprofile"):
        assert start_and_stop(broker, topic).events == 0
    missing = [m for m in warnings(caplog) if f"topic {topic!r} does not exist yet" in m]
    assert len(missing) == 1 and "num.partitions" in missing[0]

    # with the topic there, no such warning
    ensure_topics(broker.bootstrap, {topic: 2})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    deadline = time.monotonic() + TIMEOUT
    while topic not in admin.list_topics(timeout=10).topics:  # the broker's metadata follows
        assert time.monotonic() < deadline
        time.sleep(0.2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="liveprofile"):
        start_and_stop(broker, topic)
    assert not [m for m in warnings(caplog) if "does not exist yet" in m]


def test_publisher_warns_when_the_topic_keeps_another_partition_count(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"counted-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="liveprofile"):
        created = KafkaPublisher(broker.bootstrap, topic, partitions=2)
    assert created.partitions == 2 and created.warning is None and not warnings(caplog)
    created.producer.flush(10)

    with caplog.at_level(logging.WARNING, logger="liveprofile"):
        same = KafkaPublisher(broker.bootstrap, topic, partitions=2)
        other = KafkaPublisher(broker.bootstrap, topic, partitions=3)
    assert same.warning is None
    assert other.partitions == 2 and other.warning is not None
    assert warnings(caplog) == [other.warning]
    assert f"topic {topic!r} exists with 2 partitions, not the 3 asked for" in other.warning
    other.extend([EVENT])
    assert set(other.stats.per_partition) <= {0, 1}  # the topic's own partitions


def test_publish_cli_says_the_topic_keeps_its_partition_count(
    broker: Broker, tmp_path: Path
) -> None:
    topic = f"cli-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, {topic: 1})
    path = tmp_path / "events.jsonl"
    path.write_bytes(EVENT + b"\n")
    args = [sys.executable, "-m", "liveprofile.cli", "publish", str(path)]
    args += ["--kafka", broker.bootstrap, "--topic", topic, "--topic-partitions", "3"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["partitions"] == 1 and out["published"] == 1
    expected = f"WARNING: topic {topic!r} exists with 1 partition, not the 3 asked for"
    assert done.stderr.count(expected) == 1, done.stderr

"""A regression task behind the shared model with a real KRaft broker and two real worker
processes at once (the scoped Redis workers' cases are in test_shared_regression.py): each
batch's changes, the target statistics included, are merged exactly once, and the model the
read API loads predicts a number."""

from __future__ import annotations

from pathlib import Path

import kafka_helpers as kh
import numpy as np
from redis_server import RedisServer
from test_shared_regression import TASKS, TASKS_TOML

from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import partition_scope
from liveprofile.kafka.producer import KafkaPublisher
from liveprofile.learn.regression import LinearOGD, metrics_from_bytes
from liveprofile.learn.stored import StoredModels, shared_learned
from liveprofile.redis.fence import FencedRedisStore


def test_two_workers_merge_a_regression_model_and_its_statistics_once(
    broker: Broker, server: RedisServer, lines: list[bytes], tmp_path: Path
) -> None:
    topic = "shared-regression"
    config = tmp_path / "pipeline.toml"
    config.write_text(kh.SHARED_CONFIG + TASKS_TOML)
    third = len(lines) // 3
    publisher = KafkaPublisher(broker.bootstrap, topic, partitions=kh.PARTITIONS, validate=False)
    publisher.extend(lines[:third])
    log1, log2 = tmp_path / "w1.log", tmp_path / "w2.log"
    first = kh.worker(broker, server.url, topic, config, log1, "w1")
    second = kh.worker(broker, server.url, topic, config, log2, "w2")
    kh.wait("two members", lambda: kh.members(broker, topic) == 2)
    publisher.extend(lines[third:])
    kh.wait("both workers to catch up", kh.caught_up(broker, server.url, topic))
    kh.stop(second, log2)
    kh.stop(first, log1)
    assert kh.applied(log1) > 0 and kh.applied(log2) > 0

    store = FencedRedisStore(server.url, prefix=topic)
    for task in TASKS:
        counted = 0
        for p in range(kh.PARTITIONS):
            blob = store.get_meta(f"metrics/{task}@{partition_scope(topic, p)}")
            counted += 0 if blob is None else metrics_from_bytes(blob).n
        assert shared_learned(store, task) == counted > 0, task
    model = StoredModels(store).get("spend_2d", seq=0)
    assert isinstance(model, LinearOGD) and model.wg.any()
    assert model.stats[0] == shared_learned(store, "spend_2d")  # every target counted once
    assert np.isfinite(model.predict_one({"bias": 1.0}))
    store.close()

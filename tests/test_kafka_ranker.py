"""Ranker rounds (``ranker.every``) on Kafka workers: a real KRaft broker, a real Redis server.

A worker that owns partition 0 runs the rounds over that partition's batches and saves one
ranker per task, shared by every partition; the read side (the recommender over the store read
as one, ``liveprofile ranker show``) ranks with it. A worker that no longer owns partition 0
cannot overwrite it (the save is fenced by partition 0's last commit). The Flink job's batch
function (``flink.job.ApplyBatches``, driven here as Flink's subtasks call it, one per
partition, with windows of half a day of events) runs the rounds the same way.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer
from kafka_helpers import SHARED_CONFIG
from redis_server import RedisServer

from liveprofile.cli import main
from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.flink.job import ApplyBatches, FlinkSettings
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import partition_scope
from liveprofile.kafka.producer import KafkaPublisher, ensure_topics, producer_config
from liveprofile.kafka.rounds import LEAD_PARTITION
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.redis.fence import FencedOut, FencedRedisStore
from liveprofile.serving.learned import BLEND, FEATURES, load_ranker, ranker_meta
from liveprofile.serving.partitions import PartitionedView
from liveprofile.serving.recommend import Recommender
from liveprofile.store.layout import PROFILES

SHOP = SyntheticConfig(users=80, items=40, categories=4, days=6, seed=4)
RANKED = SHARED_CONFIG + '[ranker]\nevery = "1d"\nusers = 40\n'
PARTITIONS = 2


def test_the_worker_owning_partition_0_trains_the_one_shared_ranker(
    broker: Broker, server: RedisServer
) -> None:
    topic = "ranked"
    events = generate(SHOP)
    publisher = KafkaPublisher(broker.bootstrap, topic, partitions=PARTITIONS, validate=False)
    publisher.extend([json.dumps(e).encode() for e in events])
    config = PipelineConfig.from_toml(RANKED)
    store = FencedRedisStore(server.url, prefix=topic)
    worker = KafkaWorker(config, store, broker.bootstrap, topic, topic, batch_size=200)
    assert worker.run(max_idle_polls=10).events > 0
    learned = worker.rounds.summary()
    assert learned["rounds"] >= 2 and learned["users"] > 0 and learned["failed"] == 0

    view = PartitionedView(store)
    assert view.partitioned()
    ranker = load_ranker(view, "convert")
    assert ranker.state.users == learned["users"] and ranker.state.pairs > 0
    assert tuple(ranker.state.average) != BLEND  # it learned
    meta = store.client.hkeys(f"{topic}:meta")
    names = sorted(k.decode() for k in meta if k.startswith(b"ranker/"))
    assert names == [ranker_meta("convert")]  # one, not one per partition

    # the read side ranks with it: scores as the ranker gives them, in its order
    for user, _ in view.scan(PROFILES, limit=3):
        out = Recommender(view).recommend(user, k=10)
        rows = np.array([[r["features"][f] for f in FEATURES] for r in out["items"]])
        assert [r["rank_score"] for r in out["items"]] == ranker.score(rows).tolist()
    url = f"{server.url}?prefix={topic}"
    shown = CliRunner().invoke(main, ["ranker", "show", "--store", url])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["users"] == learned["users"]

    # an owner of partition 0 whose last commit is no longer the partition's cannot save
    scope = partition_scope(topic, LEAD_PARTITION)
    fence = store.fence_value(scope)
    assert fence > 0
    before = store.get_meta(ranker_meta("convert"))
    with pytest.raises(FencedOut):
        store.commit_meta_if_owner(scope, fence - 1, {ranker_meta("convert"): b"stale"})
    assert store.get_meta(ranker_meta("convert")) == before
    store.close()


def test_the_flink_subtask_owning_partition_0_trains_the_ranker(
    broker: Broker, server: RedisServer
) -> None:
    topic = "ranked-flink"
    events = sorted(generate(SHOP), key=lambda e: e["ts"])
    users = sorted({e["user_id"] for e in events})
    part = {u: k % PARTITIONS for k, u in enumerate(users)}
    # the records, as the job's source reads them (the event-time gate asks Kafka what is left)
    ensure_topics(broker.bootstrap, {topic: PARTITIONS})
    producer = Producer(producer_config(broker.bootstrap))
    for e in events:
        producer.produce(topic, json.dumps(e).encode(), e["user_id"], partition=part[e["user_id"]])
    producer.flush(30)
    settings = FlinkSettings(
        broker.bootstrap, topic, server.url, prefix=topic, config_toml=RANKED, parallelism=2
    )
    subtasks = [ApplyBatches(settings), ApplyBatches(settings)]  # subtask p owns partition p
    for subtask in subtasks:
        subtask.open()
    offsets = [0] * PARTITIONS
    start = events[0]["ts"]
    try:
        for window in range(2 * SHOP.days + 1):  # half a day of events per window
            lo, hi = start + window * 43_200, start + (window + 1) * 43_200
            for p, subtask in enumerate(subtasks):
                mine = [e for e in events if part[e["user_id"]] == p and lo <= e["ts"] < hi]
                rows = [(offsets[p] + k, json.dumps(e).encode()) for k, e in enumerate(mine)]
                offsets[p] += len(rows)
                if rows:  # at parallelism 2 no window waits (Flink's alignment alone)
                    assert subtask.apply(p, rows) == len(rows)
        assert not any(subtask.holding() for subtask in subtasks)
        lead, other = (s.rounds.summary() for s in subtasks)
    finally:
        for subtask in subtasks:
            subtask.close()
    assert lead["rounds"] >= 4 and lead["users"] > 0 and lead["failed"] == 0
    assert other["rounds"] == 0  # partition 1's owner runs none
    store = FencedRedisStore(server.url, prefix=topic)
    view = PartitionedView(store)
    ranker = load_ranker(view, "convert")
    assert ranker.state.users == lead["users"] and tuple(ranker.state.average) != BLEND
    user = next(u for u in users if part[u] == 1)  # a user of the other partition is ranked
    out = Recommender(view).recommend(user, k=5)
    rows = np.array([[r["features"][f] for f in FEATURES] for r in out["items"]])
    assert [r["rank_score"] for r in out["items"]] == ranker.score(rows).tolist()
    store.close()

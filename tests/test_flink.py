"""The Flink runner on a local mini-cluster, reading a real Kafka broker into a real Redis server.

The job's final store must equal the Kafka worker's over the same topic (another prefix):
profiles, each partition's model, metrics, item statistics, counts, offsets and dead letters
(see ``kafka_helpers.snapshot``). The job runs twice over one topic, the second time after more
events were published: it starts at the offsets in the store, so nothing is applied twice.
With the shared model (and the source's watermark alignment), the job must train one model
per task from every partition, each batch merged exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import kafka_helpers as kh
import pytest
from kafka_helpers import CONFIG, SHARED_CONFIG
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.flink.jars import resolve_connector
from liveprofile.flink.job import FlinkSettings, run, source_ddl
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import partition_scope
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.stored import shared_learned
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.serving.partitions import PartitionedView
from liveprofile.store.layout import metrics_meta, read_checkpoint
from liveprofile.store.scoped import ScopedStore

pytest.importorskip("pyflink", reason="the Flink runner needs the 'flink' extra")
# PyFlink's own modules warn about their deprecated APIs on import, leave its gateway
# process's pipes to the collector, and the local mini-cluster's in-process Python worker
# (loopback mode) sees its gRPC channel closed when a job is cancelled
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning"),
]


def test_job_equals_kafka_worker_and_resumes_at_store_offsets(
    broker: Broker, server: RedisServer, lines: list[bytes]
) -> None:
    topic = "flink"
    half = len(lines) // 2
    settings = FlinkSettings(
        broker.bootstrap,
        topic,
        server.url,
        prefix=topic,
        config_toml=CONFIG,
        batch_ms=100,
        checkpoint_ms=500,
        jars=[str(resolve_connector())],
    )
    kh.publish(broker.bootstrap, topic, lines[:half])
    run(settings, until_caught_up=True)
    first = kh.committed(server.url, topic, topic)
    assert first > 0
    kh.publish(broker.bootstrap, topic, lines[half:])
    run(settings, until_caught_up=True)
    want = kh.reference(broker, server.url, topic)
    kh.assert_equal(kh.snapshot(server.url, topic, topic), want)


def test_job_trains_the_shared_model_aligned_across_partitions(
    broker: Broker, server: RedisServer, lines: list[bytes], tmp_path: Path
) -> None:
    """With ``run.shared_model`` (and the source's watermark alignment) the job merges every
    partition's batches into one model per task, each exactly once: the model's count of
    learned examples equals the examples the partitions' metrics counted, and a Kafka worker's
    over the same topic; the read side sees the partitions' counts as one store's."""
    topic = "flink-shared"
    assert "alignment.max-drift" in source_ddl(
        FlinkSettings(broker.bootstrap, topic, server.url, config_toml=SHARED_CONFIG), ""
    )
    settings = FlinkSettings(
        broker.bootstrap,
        topic,
        server.url,
        prefix=topic,
        config_toml=SHARED_CONFIG,
        batch_ms=100,
        checkpoint_ms=500,
        jars=[str(resolve_connector())],
        trace=str(tmp_path / "trace.jsonl"),
    )
    kh.publish(broker.bootstrap, topic, lines)
    run(settings, until_caught_up=True)
    # the Python workers' per-batch trace: each partition's batches follow one another from
    # offset 0, its event-time watermark moving on batch by batch to its committed one (the
    # job may be cancelled between a batch's commit and its trace line: the last one may miss)
    traced = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert {r["p"] for r in traced} == set(range(kh.PARTITIONS))
    assert sum(r["n"] for r in traced) > len(lines) // 2
    config = PipelineConfig.from_toml(SHARED_CONFIG)
    reference = FencedRedisStore(server.url, prefix=f"ref-{topic}")
    worker = KafkaWorker(config, reference, broker.bootstrap, topic, f"ref-{topic}", batch_size=200)
    assert worker.run(max_idle_polls=10).events > 0
    store = FencedRedisStore(server.url, prefix=topic)
    scopes = [partition_scope(topic, p) for p in range(kh.PARTITIONS)]
    for task in (t.name for t in config.tasks):
        counted = 0
        for scope in scopes:
            blob = ScopedStore(store, scope).get_meta(metrics_meta(task))
            counted += 0 if blob is None else Prequential.from_bytes(blob).n
        assert shared_learned(store, task) == counted == shared_learned(reference, task)
    assert shared_learned(store, "convert") > 0
    for p in range(kh.PARTITIONS):
        mine = [r for r in traced if r["p"] == p]
        assert [r["end"] - r["n"] for r in mine] == [0] + [r["end"] for r in mine[:-1]]
        marks = [r["wm"] for r in mine]
        ckpt = read_checkpoint(ScopedStore(store, partition_scope(topic, p)))
        assert marks == sorted(marks) and mine[-1]["end"] <= ckpt.offsets[f"kafka:{topic}:{p}"]
        if mine[-1]["end"] == ckpt.offsets[f"kafka:{topic}:{p}"]:
            assert marks[-1] == round(ckpt.watermark, 3)
    got, want = PartitionedView(store), PartitionedView(reference)
    assert got.scopes() == scopes
    mine, theirs = read_checkpoint(got), read_checkpoint(want)
    assert (mine.events, mine.duplicates, mine.dead_letters, mine.offsets) == (
        theirs.events,
        theirs.duplicates,
        theirs.dead_letters,
        theirs.offsets,
    )
    assert mine.events > 0
    store.close()
    reference.close()

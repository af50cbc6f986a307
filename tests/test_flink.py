"""The Flink runner on a local mini-cluster, reading a real Kafka broker into a real Redis server.

The job's final store must equal the Kafka worker's over the same topic (another prefix):
profiles, each partition's model, metrics, item statistics, counts, offsets and dead letters
(see ``kafka_helpers.snapshot``). The job runs twice over one topic, the second time after more
events were published: it starts at the offsets in the store, so nothing is applied twice.
"""

from __future__ import annotations

import kafka_helpers as kh
import pytest
from kafka_helpers import CONFIG
from redis_server import RedisServer

from liveprofile.flink.jars import resolve_connector
from liveprofile.flink.job import FlinkSettings, run
from liveprofile.kafka.broker import Broker

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

"""The Flink runner on a standalone cluster (one jobmanager, two taskmanagers, started from the
PyFlink distribution), with a real Kafka broker and a real Redis server: a taskmanager is killed
(SIGKILL) while the job runs; the job restarts on the other one from its last checkpoint, and
the final store equals an uninterrupted Kafka worker's run over the same topic (profiles,
per-partition models, metrics, item statistics, counts, offsets and dead letters).
"""

from __future__ import annotations

from collections.abc import Iterator

import kafka_helpers as kh
import pytest
from kafka_helpers import CONFIG
from redis_server import RedisServer

from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
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

from liveprofile.flink.cluster import StandaloneCluster  # noqa: E402
from liveprofile.flink.jars import resolve_connector  # noqa: E402
from liveprofile.flink.job import FlinkSettings, wait_caught_up  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandaloneCluster]:
    # killed with pytest too when pytest is killed from outside (no stop then)
    c = StandaloneCluster(
        tmp_path_factory.mktemp("flink"), taskmanagers=2, slots=2, die_with_parent=True
    )
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_killed_taskmanager_recovers_exactly_once(
    broker: Broker,
    server: RedisServer,
    cluster: StandaloneCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(
        path, SyntheticConfig(users=80, days=4, seed=11), invalid_rate=0.02, duplicate_rate=0.02
    )
    lines = path.read_bytes().splitlines()
    topic = "flinkha"
    half = len(lines) // 2
    settings = FlinkSettings(
        broker.bootstrap,
        topic,
        server.url,
        prefix=topic,
        config_toml=CONFIG,
        batch_ms=100,
        checkpoint_ms=500,
        parallelism=2,
        jars=[str(resolve_connector())],
    )
    kh.publish(broker.bootstrap, topic, lines[:half])
    job_id = cluster.submit(settings)
    try:
        kh.wait("a first commit", lambda: kh.committed(server.url, topic, topic) > 0)
        kh.wait(
            "a completed checkpoint",
            lambda: cluster.checkpoints(job_id) > 0,
        )
        cluster.kill(cluster.taskmanagers[0])
        kh.publish(broker.bootstrap, topic, lines[half:])
        wait_caught_up(settings, lambda: cluster.status(job_id))
        assert cluster.restarts(job_id) > 0  # the job did fail over
    finally:
        cluster.cancel(job_id)
    want = kh.reference(broker, server.url, topic)
    kh.assert_equal(kh.snapshot(server.url, topic, topic), want)

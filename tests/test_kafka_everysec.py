"""A Kafka worker that stays up while its Redis store loses its last commits.

The store is a Redis of its own with ``appendfsync everysec``; mid-stream it is killed with
``kill -9``, its AOF is cut back to the length it had some commits earlier (at a byte inside a
command, as a machine crash that loses the last second would) and it is started again, while
the worker keeps running. The worker must ride out the outage, notice that the store went back
in time (each partition's fence is behind its state), reload those partitions and read them
again from the offsets in the store: the final store equals an uninterrupted worker's.
"""

from __future__ import annotations

import time
from pathlib import Path

import kafka_helpers as kh
from kafka_helpers import CONFIG
from redis_server import RedisServer
from test_redis_everysec import _increment, _lose_the_tail

from liveprofile.kafka.broker import Broker


def test_a_worker_that_stays_up_replays_what_the_store_lost(
    broker: Broker, everysec: RedisServer, lines: list[bytes], tmp_path: Path
) -> None:
    url, topic = everysec.url, "everysec"
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG)
    half = len(lines) // 2
    kh.publish(broker.bootstrap, topic, lines[:half])
    log = tmp_path / "worker.log"
    proc = kh.worker(broker, url, topic, config, log, "w1")
    try:
        kh.wait("commits", lambda: kh.committed(url, topic, topic) > 40)
        cut = _increment(everysec).stat().st_size
        kept = kh.committed(url, topic, topic)
        kh.wait("more commits", lambda: kh.committed(url, topic, topic) > kept + 60)
        before = kh.committed(url, topic, topic)
        _lose_the_tail(everysec, cut)
        time.sleep(0.3)  # the worker meets a server that is down
        everysec.start()
        assert kh.committed(url, topic, topic) < before  # commits were lost
        assert proc.poll() is None, log.read_text()
        kh.publish(broker.bootstrap, topic, lines[half:])
        kh.wait("the worker to catch up", kh.caught_up(broker, url, topic))
        kh.stop(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    kh.assert_equal(kh.snapshot(url, topic, topic), kh.reference(broker, url, topic))
    assert "reloaded from the store" in log.read_text()

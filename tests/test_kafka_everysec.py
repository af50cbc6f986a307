"""A Kafka worker that stays up while its Redis store is down or loses its last commits.

The store is a Redis of its own with ``appendfsync everysec``; mid-stream it is killed with
``kill -9``, its AOF is cut back to the length it had some commits earlier (at a byte inside a
command, as a machine crash that loses the last second would) and it is started again, while
the worker keeps running. The worker must ride out the outage, notice that the store went back
in time (each partition's fence is behind its state), reload those partitions and read them
again from the offsets in the store: the final store equals an uninterrupted worker's. The
work beside the batches (ranker rounds, event-time alignment's reads of other partitions) waits
out a store that is down the same way.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import kafka_helpers as kh
from kafka_helpers import CONFIG, SHARED_CONFIG
from redis_server import RedisServer
from test_kafka_ranker import RANKED, SHOP
from test_redis_everysec import _increment, _lose_the_tail

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import generate
from liveprofile.engine.local import RunStats
from liveprofile.events.schema import EventParser
from liveprofile.events.sources import Batch
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import _latest, apply_records, load_partition
from liveprofile.kafka.producer import KafkaPublisher
from liveprofile.kafka.rounds import LEAD_PARTITION, LeadRounds
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.serving.learned import ranker_meta
from liveprofile.store.layout import check_config


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


class _DownInRounds(LeadRounds):
    """Ranker rounds whose store goes down as a round starts: the Redis is stopped just
    before the batch that opens the round is taken in, and started again a second later."""

    def __init__(self, worker: KafkaWorker, server: RedisServer) -> None:
        super().__init__(worker.store, worker.config, worker.outage)
        self.server = server
        self.outages: list[threading.Thread] = []

    def committed(self, partition: int, scope: str, seq: int, batch: Batch) -> None:
        trainer = self.trainer
        due = partition == LEAD_PARTITION and trainer is not None and trainer._next is not None
        if due and len(self.outages) < 2 and _latest(batch.events) >= trainer._next:
            self.server.stop()
            back = threading.Timer(1.0, self.server.start)
            back.start()
            self.outages.append(back)
        super().committed(partition, scope, seq, batch)


def test_ranker_rounds_wait_out_the_store(broker: Broker, everysec: RedisServer) -> None:
    """A round whose store goes down under it waits until the store is back and runs to the
    end: no round fails, the worker goes on, the ranker is saved."""
    topic = "rounds-outage"
    events = [json.dumps(e).encode() for e in generate(SHOP)]
    KafkaPublisher(broker.bootstrap, topic, partitions=2, validate=False).extend(events)
    config = PipelineConfig.from_toml(RANKED)
    store = FencedRedisStore(everysec.url, prefix=topic)
    worker = KafkaWorker(config, store, broker.bootstrap, topic, topic, batch_size=200)
    worker.rounds = rounds = _DownInRounds(worker, everysec)
    try:
        assert worker.run(max_idle_polls=10).events == len(events)
    finally:
        for back in rounds.outages:
            back.join()
    assert len(rounds.outages) == 2  # two rounds met the store down
    learned = rounds.summary()
    assert learned["failed"] == 0 and learned["rounds"] >= 3 and learned["users"] > 0
    assert store.get_meta(ranker_meta("convert")) is not None
    store.close()


def test_alignment_reads_wait_out_the_store(everysec: RedisServer) -> None:
    """Event-time alignment reads the other workers' partitions from the store: with the
    store down, the read waits until it is back instead of ending the worker."""
    config = PipelineConfig.from_toml(SHARED_CONFIG)
    store = FencedRedisStore(everysec.url, prefix="aligned")
    check_config(store, config)
    owned, _ = load_partition(store, config, "t", 1, {})
    line = b'{"event_id": "e1", "user_id": "u1", "type": "view", "ts": 1700000000}'
    apply_records(store, "t", owned, [(0, line)], RunStats(), EventParser())
    worker = KafkaWorker(config, store, "127.0.0.1:1", "t", "g")
    assert worker.gate is not None
    everysec.stop()
    back = threading.Timer(1.0, everysec.start)
    back.start()
    try:
        assert worker._committed(1) == (1_700_000_000.0, 1)
    finally:
        back.join()
        store.close()

"""Kafka as the event log, against a real KRaft broker and a real Redis server.

Each scenario publishes synthetic events (with malformed and duplicated ones) to a topic of its
own, disturbs the workers or the broker while they consume, and then compares the store with an
uninterrupted single worker's run over the same topic (another consumer group, another prefix):
profiles, per-partition models, item statistics, counts, offsets and dead letters must be equal.
"""

from __future__ import annotations

import gc
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kafka_helpers as kh
import pytest
import redis
from click.testing import CliRunner
from confluent_kafka import Consumer
from kafka_helpers import CONFIG, PARTITIONS, TIMEOUT
from redis_server import RedisServer

from liveprofile.cli import main
from liveprofile.config import PipelineConfig
from liveprofile.durations import format_time
from liveprofile.errors import InvalidEvent
from liveprofile.events.schema import Event, EventParser
from liveprofile.kafka.broker import Broker, KafkaError, free_port
from liveprofile.kafka.partition import partition_scope
from liveprofile.kafka.producer import dead_letter_topic, record_key
from liveprofile.kafka.status import kafka_status
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.redis.fence import FencedOut, FencedRedisStore
from liveprofile.store.layout import read_checkpoint
from liveprofile.store.scoped import ScopedStore


@pytest.fixture(autouse=True)
def _gc_thresholds() -> Iterator[None]:
    """The CLI's group callback raises the collector's thresholds for its process; commands
    invoked in this one must not leave them raised for the tests that follow."""
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "pipeline.toml"
    path.write_text(CONFIG)
    return path


# -- publishing ------------------------------------------------------------------------------


def test_publish_keys_by_user_and_dead_letters_invalid_records(
    broker: Broker, lines: list[bytes], tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(
        main, ["publish", str(path), "--kafka", broker.bootstrap, "--topic", "pub"]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "check",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe(["pub", dead_letter_topic("pub")])
    records: list[Any] = []
    deadline = time.monotonic() + TIMEOUT
    while len(records) < stats["published"] + stats["dead_letters"]:
        assert time.monotonic() < deadline, f"{len(records)} records read"
        records += [m for m in consumer.consume(500, 0.5) if m.error() is None]
    consumer.close()
    events = [m for m in records if m.topic() == "pub"]
    letters = [json.loads(m.value()) for m in records if m.topic() != "pub"]
    assert len(events) == stats["published"] and len(letters) == stats["dead_letters"] > 0
    assert all("reason" in d and d["reason"] for d in letters)
    # one partition per user, and each user's events in the order of the file
    partitions: dict[bytes, set[int]] = {}
    for m in events:
        partitions.setdefault(m.key(), set()).add(m.partition())
    assert all(len(ps) == 1 for ps in partitions.values()) and len(partitions) > 10
    in_file = [line.strip() for line in lines if line.strip()]
    for key in partitions:
        sent = [m.value() for m in sorted(events, key=lambda m: m.offset()) if m.key() == key]
        mine = iter(line for line in in_file if record_key(line) == key)
        assert all(any(v == line for line in mine) for v in sent)  # in the file's order


def test_status_shows_lag_and_members(
    broker: Broker, server: RedisServer, lines: list[bytes]
) -> None:
    topic = "lag"
    kh.publish(broker.bootstrap, topic, lines)
    store = FencedRedisStore(server.url, prefix=topic)
    answers: list[Any] = []

    def answered() -> bool:  # (a new broker's group coordinator may still be loading)
        try:
            answers.append(kafka_status(broker.bootstrap, topic, topic, store))
        except KafkaError:
            return False
        return True

    kh.wait("the broker to tell the group's status", answered)
    before = answers[-1]
    assert before.lag == len([x for x in lines if x.strip()]) - kh.no_user(lines)
    stop = threading.Event()
    worker = KafkaWorker(
        PipelineConfig.from_toml(CONFIG),
        FencedRedisStore(server.url, prefix=topic),
        broker.bootstrap,
        topic,
        topic,
        client_id="the-worker",
    )
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    try:
        kh.wait("the worker to catch up", kh.caught_up(broker, server.url, topic))
        status = kafka_status(broker.bootstrap, topic, topic, store)
        assert status.lag == 0
        assert [m.client_id for m in status.members] == ["the-worker"]
        assert sorted(status.members[0].partitions) == list(range(PARTITIONS))
    finally:
        stop.set()
        thread.join(TIMEOUT)
    # each partition's event time: its committed watermark; no batch in flight once caught up
    for p in status.partitions:
        ckpt = read_checkpoint(ScopedStore(store, partition_scope(topic, p.partition)))
        assert p.watermark == ckpt.watermark and p.in_flight_to is None
    valid = [e.ts for e in map(_parsed, lines) if e is not None and e.user]
    assert max(p.watermark for p in status.partitions if p.watermark is not None) == max(valid)
    assert status.event_time_spread is None  # no partition has events left
    table = CliRunner().invoke(
        main,
        [
            *("status", "--kafka", broker.bootstrap, "--topic", topic, "--group", topic),
            *("--redis", server.url, "--prefix", topic),
        ],
    )
    assert table.exit_code == 0, table.output
    assert format_time(max(valid)) in table.output
    result = CliRunner().invoke(
        main,
        [
            "status",
            "--kafka",
            broker.bootstrap,
            "--topic",
            topic,
            "--group",
            topic,
            "--redis",
            server.url,
            "--prefix",
            topic,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["lag"] == 0


# -- exactly-once effect -----------------------------------------------------------------------


def test_killed_worker_resumes_exactly_once(
    broker: Broker, server: RedisServer, lines: list[bytes], config_file: Path, tmp_path: Path
) -> None:
    topic = "killed"
    half = len(lines) // 2
    kh.publish(broker.bootstrap, topic, lines[:half])
    log = tmp_path / "worker.log"
    for round_ in range(2):
        proc = kh.worker(broker, server.url, topic, config_file, log, "w1")
        done = kh.committed(server.url, topic, topic)
        kh.wait("commits", lambda d=done: kh.committed(server.url, topic, topic) > d + 40)
        kh.stop(proc, log, signal.SIGKILL)
        assert kh.committed(server.url, topic, topic) < len(lines)  # killed mid-stream
        if round_ == 0:
            kh.publish(broker.bootstrap, topic, lines[half:])
    proc = kh.worker(broker, server.url, topic, config_file, log, "w1")
    kh.wait("the worker to catch up", kh.caught_up(broker, server.url, topic))
    kh.stop(proc, log)
    kh.assert_equal(kh.snapshot(server.url, topic, topic), kh.reference(broker, server.url, topic))


def test_rebalancing_moves_partitions_exactly_once(
    broker: Broker, server: RedisServer, lines: list[bytes], config_file: Path, tmp_path: Path
) -> None:
    topic = "rebalanced"
    third = len(lines) // 3
    kh.publish(broker.bootstrap, topic, lines[:third])
    log1, log2 = tmp_path / "w1.log", tmp_path / "w2.log"
    first = kh.worker(broker, server.url, topic, config_file, log1, "w1")
    kh.wait("commits", lambda: kh.committed(server.url, topic, topic) > 40)
    second = kh.worker(broker, server.url, topic, config_file, log2, "w2")
    kh.wait(
        "the second worker's partitions",
        lambda: "assigned" in log2.read_text() and kh.members(broker, topic) == 2,
    )
    kh.publish(broker.bootstrap, topic, lines[third : 2 * third])
    # both workers own partitions, and each of those got new events: caught up means both applied
    kh.wait("both workers to catch up", kh.caught_up(broker, server.url, topic))
    assert kh.members(broker, topic) == 2
    kh.stop(second, log2)
    kh.publish(broker.bootstrap, topic, lines[2 * third :])
    kh.wait("the first worker to catch up", kh.caught_up(broker, server.url, topic))
    kh.stop(first, log1)
    # the second worker took partitions from the first, applied events, and gave them back
    text = log1.read_text()
    assert text.count("revoked") >= 1 and text.count("assigned") >= 2, text
    assert kh.applied(log1) > 0 and kh.applied(log2) > 0
    kh.assert_equal(kh.snapshot(server.url, topic, topic), kh.reference(broker, server.url, topic))


def _kafka_cli(*args: str) -> dict[str, Any]:
    """``liveprofile kafka ...`` as a process of its own; its JSON answer."""
    command = [sys.executable, "-m", "liveprofile.cli", "kafka", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_broker_restart_mid_stream(
    server: RedisServer, lines: list[bytes], config_file: Path, tmp_path: Path
) -> None:
    """The broker is started, stopped and started again with ``liveprofile kafka``."""
    data = str(tmp_path / "kafka")
    ports = ["--port", str(free_port()), "--controller-port", str(free_port())]
    own = Broker(data, port=int(ports[1]))
    assert _kafka_cli("status", "--data-dir", data) == {"running": False, "pid": None}
    started = _kafka_cli("start", "--data-dir", data, *ports, "--die-with-parent")
    try:
        assert _kafka_cli("status", "--data-dir", data)["pid"] == started["pid"]
        topic = "restarted"
        half = len(lines) // 2
        kh.publish(own.bootstrap, topic, lines[:half])
        log = tmp_path / "worker.log"
        proc = kh.worker(own, server.url, topic, config_file, log, "w1")
        kh.wait("commits", lambda: kh.committed(server.url, topic, topic) > 40)
        assert _kafka_cli("stop", "--data-dir", data) == {"stopped": True}
        assert _kafka_cli("status", "--data-dir", data)["running"] is False
        _kafka_cli("start", "--data-dir", data, *ports, "--die-with-parent")
        kh.publish(own.bootstrap, topic, lines[half:])
        kh.wait("the worker to catch up", kh.caught_up(own, server.url, topic))
        kh.stop(proc, log)
        kh.assert_equal(kh.snapshot(server.url, topic, topic), kh.reference(own, server.url, topic))
    finally:
        _kafka_cli("stop", "--data-dir", data)


def test_worker_dead_letters_reach_the_topic(broker: Broker, server: RedisServer) -> None:
    """The dead letters committed by the workers above are also on the dead-letter topic."""
    client = redis.Redis.from_url(server.url)
    stored = {k.decode() for k in client.hkeys("killed:deadletter")}
    client.close()
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "dl", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([dead_letter_topic("killed")])
    keys: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not stored <= keys:
        keys |= {m.key().decode() for m in consumer.consume(500, 0.5) if m.key()}
    consumer.close()
    assert stored and stored <= keys


def test_a_stale_owner_cannot_commit(server: RedisServer) -> None:
    """Two owners that loaded the same partition state: only the first commit goes through."""
    store = FencedRedisStore(server.url, prefix="fence")
    store.fence = ("t.0", 0)
    store.commit({"profile": {"u1": b"first"}}, {})
    with pytest.raises(FencedOut):
        store.commit({"profile": {"u1": b"stale"}}, {})  # continues from seq 0 as well
    store.fence = ("t.0", 1)
    store.commit({"profile": {"u1": b"next"}}, {})
    assert store.read("profile", ["u1"]) == [b"next"] and store.fence_value("t.0") == 2
    store.close()


def test_collector_appends_to_kafka(broker: Broker, tmp_path: Path) -> None:
    from cli_server import CliServer

    good = [
        {"event_id": f"h{i}", "user_id": f"u{i % 3}", "type": "view", "ts": 1.7e9 + i}
        for i in range(6)
    ]
    bad = {"event_id": "hx", "user_id": "u1", "type": "view", "ts": "yesterday"}
    args = ["collect", "--kafka", broker.bootstrap, "--topic", "http"]
    args += ["--topic-partitions", str(PARTITIONS)]
    collector = CliServer(args, {"LIVEPROFILE_TOKEN": "s3cret"}, tmp_path / "collect.log")
    try:
        answer = collector.client.post(
            "/v1/events", json=[*good, bad], headers={"Authorization": "Bearer s3cret"}
        )
    finally:
        collector.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 6
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "h", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe(["http", dead_letter_topic("http")])
    got: list[Any] = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 7:
        assert time.monotonic() < deadline, got
        got += [m for m in consumer.consume(100, 0.5) if m.error() is None]
    consumer.close()
    events = [m for m in got if m.topic() == "http"]
    by_user: dict[bytes, list[str]] = {}
    for m in sorted(events, key=lambda m: (m.partition(), m.offset())):
        by_user.setdefault(m.key(), []).append(json.loads(m.value())["event_id"])
    assert by_user == {b"u0": ["h0", "h3"], b"u1": ["h1", "h4"], b"u2": ["h2", "h5"]}
    (letter,) = [json.loads(m.value()) for m in got if m.topic() != "http"]
    assert letter["source"] == "http" and "ts" in letter["reason"]


def test_a_quiet_stream_commits_after_the_batch_delay(
    broker: Broker, server: RedisServer, lines: list[bytes]
) -> None:
    """Five events and batches of 10,000: the batch closes by time (run.max_batch_delay)."""
    topic = "quiet"
    config = PipelineConfig.from_toml('[run]\nbatch_size = 10000\nmax_batch_delay = "50ms"')
    store = FencedRedisStore(server.url, prefix=topic)
    worker = KafkaWorker(config, store, broker.bootstrap, topic, topic)
    assert worker.max_batch_delay == 0.05
    valid = [x for x in lines if b"bad-" not in x][:5]
    kh.publish(broker.bootstrap, topic, valid)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    try:
        kh.wait("the five events to be committed", kh.caught_up(broker, server.url, topic))
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert kh.committed(server.url, topic, topic) == 5


def _parsed(line: bytes) -> Event | None:
    """The event of a published line (None: one the parser refuses)."""
    try:
        return EventParser().parse_json(line)
    except InvalidEvent:
        return None

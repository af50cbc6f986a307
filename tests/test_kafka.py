"""Kafka as the event log, against a real KRaft broker and a real Redis server.

Each scenario publishes synthetic events (with malformed and duplicated ones) to a topic of its
own, disturbs the workers or the broker while they consume, and then compares the store with an
uninterrupted single worker's run over the same topic (another consumer group, another prefix):
profiles, per-partition models, item statistics, counts, offsets and dead letters must be equal.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from click.testing import CliRunner
from confluent_kafka import Consumer
from redis_server import RedisServer, running

from liveprofile.cli import main
from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.engine.state import Checkpoint
from liveprofile.events.deadletter import DeadLetter
from liveprofile.kafka.broker import Broker, KafkaError, free_port
from liveprofile.kafka.fence import FencedOut, FencedRedisStore
from liveprofile.kafka.producer import KafkaPublisher, dead_letter_topic, record_key
from liveprofile.kafka.status import kafka_status
from liveprofile.kafka.worker import KafkaWorker, partition_scope
from liveprofile.profile.state import decode_profile

CONFIG = """
[run]
batch_size = 200
[features]
bits = 14
"""
TIMEOUT = 90.0
PARTITIONS = 3


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running(tmp_path_factory.mktemp("redis"))


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(
        path, SyntheticConfig(users=60, days=4, seed=7), invalid_rate=0.02, duplicate_rate=0.02
    )
    return path.read_bytes().splitlines()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "pipeline.toml"
    path.write_text(CONFIG)
    return path


def _publish(bootstrap: str, topic: str, lines: list[bytes]) -> None:
    publisher = KafkaPublisher(bootstrap, topic, partitions=PARTITIONS, validate=False)
    publisher.extend(lines)


def _snapshot(url: str, prefix: str, topic: str) -> dict[str, Any]:
    """What must not depend on how the run was disturbed: profiles, each partition's model,
    metrics, item statistics and counts, the offsets, and the dead letters."""
    client = redis.Redis.from_url(url)
    try:
        profiles = {
            k.decode(): decode_profile(bytes(v))
            for k, v in client.hgetall(f"{prefix}:profile").items()
        }
        letters = {
            k.decode(): msgspec.json.decode(v, type=DeadLetter)
            for k, v in client.hgetall(f"{prefix}:deadletter").items()
        }
        meta = {k.decode(): bytes(v) for k, v in client.hgetall(f"{prefix}:meta").items()}
        parts: dict[int, Any] = {}
        for p in range(PARTITIONS):
            scope = partition_scope(topic, p)
            ckpt = msgspec.msgpack.decode(meta[f"checkpoint@{scope}"], type=Checkpoint)
            items = client.hgetall(f"{prefix}:item@{scope}")
            parts[p] = {
                "counts": (ckpt.events, ckpt.duplicates, ckpt.dead_letters, ckpt.watermark),
                "offsets": ckpt.offsets,
                "models": {
                    k: v
                    for k, v in meta.items()
                    if k.endswith(f"@{scope}") and k.startswith(("model/", "metrics/"))
                },
                "items": {k.decode(): bytes(v) for k, v in items.items()},
            }
    finally:
        client.close()
    return {"profiles": profiles, "dead_letters": letters, "partitions": parts}


def _reference(broker: Broker, url: str, topic: str) -> dict[str, Any]:
    """One worker, never disturbed, over the whole topic."""
    config = PipelineConfig.from_toml(CONFIG)
    store = FencedRedisStore(url, prefix=f"ref-{topic}")
    worker = KafkaWorker(config, store, broker.bootstrap, topic, f"ref-{topic}", batch_size=200)
    stats = worker.run(max_idle_polls=10)
    store.close()
    assert stats.events > 0
    return _snapshot(url, f"ref-{topic}", topic)


def _worker(
    broker: Broker, url: str, topic: str, config: Path, log: Path, name: str
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "liveprofile.cli", "worker", "--kafka", broker.bootstrap]
    args += ["--topic", topic, "--group", topic, "--redis", url, "--prefix", topic]
    args += ["--config", str(config), "--batch-size", "10", "--max-batch-delay", "0.05"]
    args += ["--consumer", name]
    with open(log, "ab") as err, open(log.with_suffix(".out"), "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=err)


def _applied(log: Path) -> int:
    """Events a worker reports having applied (its last line of output)."""
    return int(json.loads(log.with_suffix(".out").read_text().splitlines()[-1])["events"])


def _committed(url: str, prefix: str, topic: str) -> int:
    """Records (events, duplicates and dead letters) committed over all partitions."""
    client = redis.Redis.from_url(url)
    try:
        total = 0
        for p in range(PARTITIONS):
            blob = client.hget(f"{prefix}:meta", f"checkpoint@{partition_scope(topic, p)}")
            if blob is not None:
                c = msgspec.msgpack.decode(bytes(blob), type=Checkpoint)
                total += c.events + c.duplicates + c.dead_letters
        return total
    finally:
        client.close()


def _wait(what: str, cond: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _caught_up(broker: Broker, url: str, topic: str) -> Callable[[], bool]:
    store = FencedRedisStore(url, prefix=topic)

    def check() -> bool:
        try:
            status = kafka_status(broker.bootstrap, topic, topic, store)
        except KafkaError:  # e.g. the group coordinator still loading on a new broker
            return False
        return all((p.store_offset or 0) == p.end_offset for p in status.partitions)

    return check


def _stop(proc: subprocess.Popen[bytes], log: Path, sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    code = proc.wait(timeout=TIMEOUT)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), log.read_text()


def _assert_equal(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["partitions"] == want["partitions"]
    assert got["dead_letters"] == want["dead_letters"] and got["dead_letters"]
    assert got["profiles"].keys() == want["profiles"].keys()
    differ = [u for u, p in got["profiles"].items() if p != want["profiles"][u]]
    assert not differ, f"{len(differ)} profiles differ, e.g. {differ[0]}"


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
    _publish(broker.bootstrap, topic, lines)
    store = FencedRedisStore(server.url, prefix=topic)
    before = kafka_status(broker.bootstrap, topic, topic, store)
    assert before.lag == len([x for x in lines if x.strip()]) - _no_user(lines)
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
        _wait("the worker to catch up", _caught_up(broker, server.url, topic))
        status = kafka_status(broker.bootstrap, topic, topic, store)
        assert status.lag == 0
        assert [m.client_id for m in status.members] == ["the-worker"]
        assert sorted(status.members[0].partitions) == list(range(PARTITIONS))
    finally:
        stop.set()
        thread.join(TIMEOUT)
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


def _no_user(lines: list[bytes]) -> int:
    return sum(1 for x in lines if x.strip() and record_key(x.strip()) is None)


# -- exactly-once effect -----------------------------------------------------------------------


def test_killed_worker_resumes_exactly_once(
    broker: Broker, server: RedisServer, lines: list[bytes], config_file: Path, tmp_path: Path
) -> None:
    topic = "killed"
    half = len(lines) // 2
    _publish(broker.bootstrap, topic, lines[:half])
    log = tmp_path / "worker.log"
    for round_ in range(2):
        proc = _worker(broker, server.url, topic, config_file, log, "w1")
        done = _committed(server.url, topic, topic)
        _wait("commits", lambda d=done: _committed(server.url, topic, topic) > d + 40)
        _stop(proc, log, signal.SIGKILL)
        assert _committed(server.url, topic, topic) < len(lines)  # killed mid-stream
        if round_ == 0:
            _publish(broker.bootstrap, topic, lines[half:])
    proc = _worker(broker, server.url, topic, config_file, log, "w1")
    _wait("the worker to catch up", _caught_up(broker, server.url, topic))
    _stop(proc, log)
    _assert_equal(_snapshot(server.url, topic, topic), _reference(broker, server.url, topic))


def test_rebalancing_moves_partitions_exactly_once(
    broker: Broker, server: RedisServer, lines: list[bytes], config_file: Path, tmp_path: Path
) -> None:
    topic = "rebalanced"
    third = len(lines) // 3
    _publish(broker.bootstrap, topic, lines[:third])
    log1, log2 = tmp_path / "w1.log", tmp_path / "w2.log"
    first = _worker(broker, server.url, topic, config_file, log1, "w1")
    _wait("commits", lambda: _committed(server.url, topic, topic) > 40)
    second = _worker(broker, server.url, topic, config_file, log2, "w2")
    _wait(
        "the second worker's partitions",
        lambda: "assigned" in log2.read_text() and _members(broker, topic) == 2,
    )
    _publish(broker.bootstrap, topic, lines[third : 2 * third])
    _wait(
        "the second worker's commits",
        lambda: (
            "assigned" in log2.read_text() and _committed(server.url, topic, topic) > third + 40
        ),
    )
    _stop(second, log2)
    _publish(broker.bootstrap, topic, lines[2 * third :])
    _wait("the first worker to catch up", _caught_up(broker, server.url, topic))
    _stop(first, log1)
    # the second worker took partitions from the first, applied events, and gave them back
    text = log1.read_text()
    assert text.count("revoked") >= 1 and text.count("assigned") >= 2, text
    assert _applied(log1) > 0 and _applied(log2) > 0
    _assert_equal(_snapshot(server.url, topic, topic), _reference(broker, server.url, topic))


def _members(broker: Broker, topic: str) -> int:
    status = kafka_status(broker.bootstrap, topic, topic)
    return sum(1 for m in status.members if m.partitions)


def test_broker_restart_mid_stream(
    server: RedisServer, lines: list[bytes], config_file: Path, tmp_path: Path
) -> None:
    own = Broker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    own.start()
    try:
        topic = "restarted"
        half = len(lines) // 2
        _publish(own.bootstrap, topic, lines[:half])
        log = tmp_path / "worker.log"
        proc = _worker(own, server.url, topic, config_file, log, "w1")
        _wait("commits", lambda: _committed(server.url, topic, topic) > 40)
        own.stop()
        time.sleep(1.0)
        own.start()
        _publish(own.bootstrap, topic, lines[half:])
        _wait("the worker to catch up", _caught_up(own, server.url, topic))
        _stop(proc, log)
        _assert_equal(_snapshot(server.url, topic, topic), _reference(own, server.url, topic))
    finally:
        own.stop()


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
    _publish(broker.bootstrap, topic, valid)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, kwargs={"stop": stop})
    thread.start()
    try:
        _wait("the five events to be committed", _caught_up(broker, server.url, topic))
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert _committed(server.url, topic, topic) == 5

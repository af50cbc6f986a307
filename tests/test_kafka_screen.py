"""Event-time screening on the Kafka runners, as the local runner and the Redis worker screen.

An event dated 2099 or with a value out of ``events.max_value`` must not reach the core: it is
dead-lettered with its reason (in the store, under ``{topic}:{partition}:{offset}``, and on the
dead-letter topic, in the batch's commit), and the watermark does not move. Against a real KRaft
broker and a real Redis server, the Kafka worker's final store equals the local runner's over
the same input (profiles, dead letters and their counts), and the Flink job's (a local
mini-cluster) equals the Kafka worker's. Plain batches keep their columns path.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import kafka_helpers as kh
import msgspec
import pytest
import redis
from confluent_kafka import Consumer
from kafka_helpers import CONFIG, TIMEOUT
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import LocalRunner, RunStats
from liveprofile.events.columns import EventColumns
from liveprofile.events.deadletter import DeadLetter, read_dead_letters
from liveprofile.events.schema import EventParser
from liveprofile.events.sources import JsonlSource
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import (
    DEAD_LETTER_NAMESPACE,
    apply_records,
    load_partition,
    partition_scope,
)
from liveprofile.kafka.producer import KafkaPublisher, dead_letter_topic, record_key
from liveprofile.kafka.worker import KafkaWorker
from liveprofile.profile.state import Profile, decode_profile
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.store.layout import Checkpoint, check_config, read_checkpoint
from liveprofile.store.memory import MemoryStore
from liveprofile.store.scoped import ScopedStore

FUTURE = 4_102_444_800.0  # 2100-01-01T00:00:00Z
TOO_LARGE = 1e12  # beyond events.max_value (1e9)


def _with_bad_events(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """``lines`` with a far-future event and an out-of-bounds value of known users inserted
    amid the stream; the two lines."""
    parser = EventParser()
    users = []
    for line in lines:
        try:
            users.append(parser.parse_json(line).user)
        except Exception:
            continue
    first, second = users[len(users) // 3], users[2 * len(users) // 3]
    future = {"event_id": "far-future", "user_id": first, "type": "view", "ts": FUTURE}
    large = {
        "event_id": "too-large",
        "user_id": second,
        "type": "purchase",
        "ts": 1_704_100_000.0,
        "value": TOO_LARGE,
    }
    bad = [msgspec.json.encode(future), msgspec.json.encode(large)]
    out = list(lines)
    out.insert(len(out) // 2, bad[0])
    out.insert(len(out) // 2 + 7, bad[1])
    return out, bad


@pytest.fixture(scope="module")
def screened(lines: list[bytes]) -> list[bytes]:
    return _with_bad_events(lines)[0]


def _latest_valid(lines: list[bytes]) -> float:
    parser, latest = EventParser(), 0.0
    for line in lines:
        try:
            ts = parser.parse_json(line).ts
        except Exception:
            continue
        if ts < FUTURE:
            latest = max(latest, ts)
    return latest


@dataclass
class Local:
    """The local runner's store and dead letters over the same input."""

    profiles: dict[str, Profile]
    checkpoint: Checkpoint
    dead_letters: list[DeadLetter]


@pytest.fixture(scope="module")
def local(screened: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Local:
    tmp = tmp_path_factory.mktemp("local")
    path = tmp / "events.jsonl"
    path.write_bytes(b"\n".join(screened) + b"\n")
    store = MemoryStore()
    runner = LocalRunner(PipelineConfig.from_toml(CONFIG), store, tmp / "dead.jsonl")
    runner.run(JsonlSource(path))
    runner.close()
    profiles = {u: decode_profile(bytes(b)) for u, b in store.scan("profile")}
    return Local(profiles, read_checkpoint(store), read_dead_letters(tmp / "dead.jsonl"))


def _steady(letter: DeadLetter) -> tuple[str, str]:
    """A dead letter's record and reason, but for how far ahead of the runner's clock a
    far-future event was when it was screened (the runs being compared ran at other times)."""
    return letter.raw, re.sub(r"is \d+ s ahead of", "is ... s ahead of", letter.reason)


def _screen_letters(letters: dict[str, Any]) -> dict[str, str]:
    """The screened dead letters (the events that parse), by event id: their reasons."""
    out = {}
    for letter in letters.values():
        for marker in (b"far-future", b"too-large"):
            if marker.decode() in letter.raw:
                out[marker.decode()] = letter.reason
    return out


def _topic_letters(broker: Broker, topic: str, expected: set[str]) -> dict[str, bytes]:
    """The keyed records of the dead-letter topic, read until every key of ``expected`` came
    (the publisher's own records there have no key)."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([dead_letter_topic(topic)])
    out: dict[str, bytes] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while not expected <= out.keys():
            assert time.monotonic() < deadline, f"{len(out)} dead letters read"
            for m in consumer.consume(500, 0.5):
                key, value = m.key(), m.value()
                if m.error() is None and key and value is not None:
                    out[key.decode()] = value
    finally:
        consumer.close()
    return out


def test_kafka_worker_dead_letters_what_the_local_runner_does(
    broker: Broker, server: RedisServer, screened: list[bytes], local: Local
) -> None:
    """One partition, so that the worker's watermark is the local runner's: the same store."""
    topic = "screen"
    KafkaPublisher(broker.bootstrap, topic, partitions=1, validate=False).extend(screened)
    config = PipelineConfig.from_toml(CONFIG)
    store = FencedRedisStore(server.url, prefix=topic)
    worker = KafkaWorker(config, store, broker.bootstrap, topic, topic, batch_size=200)
    assert worker.run(max_idle_polls=10).events > 0
    ckpt = read_checkpoint(ScopedStore(store, partition_scope(topic, 0)))
    letters = {
        k: msgspec.json.decode(v, type=DeadLetter) for k, v in store.scan(DEAD_LETTER_NAMESPACE)
    }
    profiles = {u: decode_profile(bytes(b)) for u, b in store.scan("profile")}
    store.close()
    reasons = _screen_letters(letters)
    assert "events.max_future" in reasons["far-future"] and "2100-01-01" in reasons["far-future"]
    assert "events.max_value" in reasons["too-large"]
    for key, letter in letters.items():  # keyed by the record, as a record that does not parse
        assert key == f"{topic}:0:{letter.offset}" and letter.source == f"kafka:{topic}:0"
    # the watermark did not move past the latest valid event
    assert ckpt.watermark == _latest_valid(screened) == local.checkpoint.watermark
    # ... the letters went to the dead-letter topic, committed with their batches
    sent = _topic_letters(broker, topic, set(letters))
    assert sent.keys() == letters.keys()
    for key, blob in sent.items():
        assert msgspec.json.decode(blob, type=DeadLetter) == letters[key]
    # ... and the store is the local runner's: profiles, dead letters, counts
    assert profiles == local.profiles and profiles
    # (records without a user id cannot be keyed: the publisher dead-letters those itself)
    unkeyed = {line.strip().decode() for line in screened if record_key(line.strip()) is None}
    assert sorted(_steady(d) for d in letters.values()) == sorted(
        _steady(d) for d in local.dead_letters if d.raw not in unkeyed
    )
    counts = (ckpt.events, ckpt.duplicates, ckpt.dead_letters + len(unkeyed))
    local_counts = (local.checkpoint.events, local.checkpoint.duplicates)
    assert counts == (*local_counts, len(local.dead_letters))


# PyFlink's own modules warn about their deprecated APIs on import, and the mini-cluster's
# in-process Python worker sees its channel closed when the job is cancelled (see test_flink.py)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_flink_job_screens_as_the_kafka_worker(
    broker: Broker, server: RedisServer, screened: list[bytes], local: Local
) -> None:
    """Three partitions: the Flink job's store equals the Kafka worker's (profiles, models,
    counts, watermarks, offsets, dead letters), with as many dead letters as the local
    runner's."""
    pytest.importorskip("pyflink", reason="the Flink runner needs the 'flink' extra")
    from liveprofile.flink.jars import resolve_connector
    from liveprofile.flink.job import FlinkSettings, run

    topic = "flink-screen"
    kh.publish(broker.bootstrap, topic, screened)
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
    run(settings, until_caught_up=True)
    got = kh.snapshot(server.url, topic, topic)
    reasons = _screen_letters(got["dead_letters"])
    assert "events.max_future" in reasons["far-future"]
    assert "events.max_value" in reasons["too-large"]
    # three partitions: each one's watermark below the latest valid event's
    watermarks = [p["counts"][3] for p in got["partitions"].values()]
    assert max(watermarks) == _latest_valid(screened)
    dead = sum(p["counts"][2] for p in got["partitions"].values())
    assert dead + kh.no_user(screened) == len(local.dead_letters)
    want = kh.reference(broker, server.url, topic)
    for snap in (got, want):
        snap["dead_letters"] = {k: _steady(d) for k, d in snap["dead_letters"].items()}
    kh.assert_equal(got, want)


def test_plain_batch_keeps_its_columns_and_alignment_ignores_the_dead(
    lines: list[bytes],
) -> None:
    """A plain batch with a far-future event: the event is dead-lettered under its offset,
    the rest reaches the step as columns, and the time announced for alignment is the latest
    of the events that passed."""
    prefix = f"kscreen-{uuid.uuid4().hex[:8]}"
    url = "redis://127.0.0.1:6379/0"
    parser = EventParser()
    plain = [line for line in lines if _plain(parser, line)][:300]
    _, bad = _with_bad_events(plain)
    records = [(o, line) for o, line in enumerate(plain)]
    records.insert(100, (len(plain), bad[0]))  # offsets need not be dense, only increasing
    records = [(o, line) for o, (_, line) in enumerate(records)]
    config = PipelineConfig.from_toml(CONFIG)
    store = FencedRedisStore(url, prefix=prefix)
    client = redis.Redis.from_url(url)
    announced: list[float] = []
    sent: list[dict[str, bytes | None]] = []
    try:
        check_config(store, config)
        owned, _ = load_partition(store, config, "t", 0, {})
        batch = apply_records(
            store, "t", owned, records, RunStats(), parser, sent.append, announced.append
        )
        assert batch is not None and isinstance(batch.events, EventColumns)
        assert len(batch.events) == len(plain)
        assert [list(rows) for rows in sent] == [["t:0:100"]]
        assert "events.max_future" in batch.dead_letters[0].reason
        assert announced == [max(parser.parse_json(line).ts for line in plain)]
        assert owned.state.checkpoint.watermark == announced[0]
        assert client.hexists(f"{prefix}:deadletter", "t:0:100")
        assert partition_scope("t", 0) == owned.view.scope
    finally:
        store.drop()
        store.close()
        client.close()


def _plain(parser: EventParser, line: bytes) -> bool:
    try:
        e = parser.parse_json(line)
    except Exception:
        return False
    return e.anonymous_id is None and e.props is None and not e.type.startswith("$")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_flink_source_event_time_leaves_the_far_future_out(broker: Broker) -> None:
    """The event time the Flink source's watermark follows: a record's ``ts``, but the epoch
    for one more than ``events.max_future`` ahead of its Kafka timestamp (read back from the
    job's own source table on the mini-cluster)."""
    pytest.importorskip("pyflink", reason="the Flink runner needs the 'flink' extra")
    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    from liveprofile.flink.jars import resolve_connector
    from liveprofile.flink.job import FlinkSettings, source_ddl

    topic = "flink-event-time"
    now = time.time()
    stamps = [now - 3600.0, FUTURE, now + 3600.0, now + 3 * 86400.0]
    lines = [
        msgspec.json.encode({"event_id": f"e{k}", "user_id": "u1", "type": "view", "ts": ts})
        for k, ts in enumerate(stamps)
    ]
    KafkaPublisher(broker.bootstrap, topic, partitions=1, validate=False).extend(lines)
    settings = FlinkSettings(broker.bootstrap, topic, "redis://unused", config_toml=CONFIG)
    conf = Configuration()
    conf.set_string("pipeline.jars", resolve_connector().resolve().as_uri())
    t_env = TableEnvironment.create(
        EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    )
    t_env.execute_sql(source_ddl(settings, ""))
    seen: dict[int, float] = {}
    query = "SELECT `offset`, TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), `ts`) FROM events"
    with t_env.execute_sql(query).collect() as rows:
        for row in rows:
            seen[int(row[0])] = float(row[1])
            if len(seen) == len(lines):
                break
    assert seen[0] == int(stamps[0]) and seen[2] == int(stamps[2])  # within a day: as they are
    assert seen[1] == seen[3] == 0.0  # beyond a day of the record's append: left out

"""Shared test settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings
from redis_server import RedisServer, running

from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.kafka.broker import Broker, free_port

# The conformance suites ship in the package; their asserts explain failures as test asserts do.
pytest.register_assert_rewrite("liveprofile.checks")

# Reproducible property tests: a fixed search (no example database written into the work tree)
# and no per-example wall-clock deadline.
settings.register_profile("liveprofile", derandomize=True, database=None, deadline=None)
settings.load_profile("liveprofile")


# -- a Kafka broker, a Redis server and a synthetic stream, one of each per test module that asks


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

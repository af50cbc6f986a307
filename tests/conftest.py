"""Shared test settings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# -- a Kafka broker for the whole run; a Redis server and a synthetic stream per test module


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for every module that asks (each uses topics and consumer groups of its own
    names); a test that stops or restarts a broker starts its own on spare ports instead."""
    data, port, controller = tmp_path_factory.mktemp("kafka"), free_port(), free_port()
    # killed with pytest too when pytest is killed from outside (no stop then)
    b = Broker(data, port=port, controller_port=controller, die_with_parent=True)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    yield from running(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def everysec(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of its own (a test may kill and restart it), AOF fsynced once a second."""
    yield from running(tmp_path / "redis", fsync="everysec")


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(
        path, SyntheticConfig(users=60, days=4, seed=7), invalid_rate=0.02, duplicate_rate=0.02
    )
    return path.read_bytes().splitlines()


# -- pytest-xdist (`pytest -n 2 --dist loadscope`, see .ci/run): which tests share a worker

#: test modules on the session's Kafka broker (and Flink's clusters): one worker runs them all,
#: so that one broker serves them (a module on the broker named otherwise starts a second one
#: on its worker, if that is another)
ON_BROKER = re.compile(r"tests/test_(kafka|flink)[^/]*\.py$")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: ignored when it is not installed
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope``, with the modules on the broker as one scope: every module's tests
    run on one worker (its module-scoped fixtures are set up once). Other modes as they are."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "kafka" if ON_BROKER.search(module) else module

    return ByModule(config, log)

"""Models handed to the store as the coordinates each batch changed (``learn/tracked.py``), on
SQLite and a real Redis server: over many batches, what the store reads back equals the
learner's whole checkpoint byte for byte, and equals a store written whole every batch."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from redis_server import RedisServer

import liveprofile
from liveprofile.config import LearnerConfig, PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.state import PipelineState
from liveprofile.errors import StoreError
from liveprofile.learn.base import FAKE_NEGATIVE, LEARN, PREDICT, PREDICT_LEARN, OpBatch
from liveprofile.learn.registry import dump_learner, make_learner
from liveprofile.learn.tracked import ModelTracker, stage_change
from liveprofile.redis import modeldelta
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.redis.store import RedisStore
from liveprofile.store.base import Store
from liveprofile.store.memory import MemoryStore
from liveprofile.store.scoped import ScopedStore
from liveprofile.store.sqlite import SQLiteStore

NAME = "model/t"
KINDS = {
    "ftrl": LearnerConfig(kind="ftrl", params={"l1": 0.5}),
    "ogd": LearnerConfig(kind="ogd", params={"lr": 0.05, "power": 0.5, "l2": 1e-4}),
    "linreg": LearnerConfig(kind="linreg"),
    "tuned": LearnerConfig(
        kind="tuned",
        params={
            "challengers": [{"kind": "ogd", "params": {"lr": 0.5}}],
            "min_examples": 40,
            "window": 40,
            "hold": 64,
        },
    ),
}


def _ops(rng: np.random.Generator, n: int, regression: bool = False) -> OpBatch:
    """Predictions, learns (some weighed as fake negatives) and exposures on 5-12 of 4,000
    features each."""
    ops = OpBatch()
    for _ in range(n):
        k = int(rng.integers(5, 13))
        idx = rng.integers(0, 4000, k).tolist()
        kind = [PREDICT, LEARN, PREDICT_LEARN, LEARN | FAKE_NEGATIVE][int(rng.integers(4))]
        if regression:
            kind &= ~FAKE_NEGATIVE
        y = float(rng.normal(3, 2)) if regression else float(rng.random() < 0.3)
        ops.add(kind, idx, rng.random(k).tolist(), y)
    return ops


@pytest.fixture
def sqlite_stores(tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    opened: list[Store] = []

    def make(name: str) -> Store:
        opened.append(SQLiteStore(tmp_path / f"{name}.db"))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def redis_stores(
    server: RedisServer, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Store]]:
    opened: list[RedisStore] = []

    def make(name: str) -> Store:
        test = "".join(c if c.isalnum() else "-" for c in request.node.name)
        opened.append(RedisStore(server.url, prefix=f"updates-{test}-{name}"))
        return opened[-1]

    yield make
    for store in opened:
        store.drop()
        store.close()


@pytest.fixture
def memory_stores() -> Callable[[str], Store]:
    return lambda name: MemoryStore()


def _deltas(store: Store) -> int:
    """Model deltas the store holds now (the memory store makes them whole when read)."""
    if isinstance(store, ScopedStore):
        store = store.store
    if isinstance(store, MemoryStore):
        return sum(len(m.deltas) for m in store._models.values())
    if isinstance(store, SQLiteStore):
        return int(store.db.execute("SELECT count(*) FROM meta_delta WHERE seq > 0").fetchone()[0])
    assert isinstance(store, RedisStore)
    keys = list(store.client.scan_iter(match=modeldelta.delta_key(store.prefix, "*")))
    return sum(max(0, int(store.client.llen(k)) - 1) for k in keys)


def _run(kind: str, stores: Callable[[str], Store], scoped: bool = False, every: int = 1) -> None:
    """100 batches of one learner, its changes staged on one store and its whole checkpoint
    committed to another; both read back as the learner's checkpoint after every ``every``
    batches (a read makes the memory store's deltas whole)."""
    learner = make_learner(KINDS[kind], bits=12)
    delta, whole = stores("delta"), stores("whole")
    if scoped:
        delta = ScopedStore(delta, "p0")
    delta.setup()
    whole.setup()
    trackers: dict[str, ModelTracker] = {}
    rng = np.random.default_rng(7)
    most = 0
    for batch in range(100):
        learner.run_ops(_ops(rng, int(rng.integers(0, 40)), regression=kind == "linreg"))  # type: ignore[attr-defined]
        assert stage_change(delta, trackers, NAME, learner) is None  # type: ignore[arg-type]
        delta.commit({}, {"checkpoint": b"%d" % batch})
        whole.commit({}, {NAME: dump_learner(learner), "checkpoint": b"%d" % batch})
        most = max(most, _deltas(delta))
        if batch % every and batch < 99:
            continue
        expected = dump_learner(learner)
        assert delta.get_meta(NAME) == expected
        assert whole.get_meta(NAME) == expected
    assert most >= 3  # written as deltas, not whole every batch


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deltas_on_sqlite_read_back_as_the_whole_model(
    kind: str, sqlite_stores: Callable[[str], Store]
) -> None:
    _run(kind, sqlite_stores)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deltas_in_memory_read_back_as_the_whole_model(
    kind: str, memory_stores: Callable[[str], Store]
) -> None:
    _run(kind, memory_stores, every=5)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deltas_on_redis_read_back_as_the_whole_model(
    kind: str, redis_stores: Callable[[str], Store]
) -> None:
    _run(kind, redis_stores)


def test_deltas_through_a_scoped_view_of_redis(redis_stores: Callable[[str], Store]) -> None:
    _run("ftrl", redis_stores, scoped=True)


def test_a_tuned_decision_grows_its_log_and_is_written_whole() -> None:
    learner = make_learner(KINDS["tuned"], bits=10)
    tracker = ModelTracker(learner)
    assert tracker.update().delta is None  # the first update is whole
    rng = np.random.default_rng(1)
    kinds = []
    for _ in range(60):
        before = learner.log.size  # type: ignore[attr-defined]
        learner.run_ops(_ops(rng, 20))  # type: ignore[attr-defined]
        update = tracker.update()
        kinds.append(update.delta is None)
        assert update.delta is None or learner.log.size == before  # type: ignore[attr-defined]
    assert learner.log.size > 0 and any(kinds) and not all(kinds)  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["memory", "sqlite", "redis"])
def test_a_skipped_or_failed_commit_makes_the_next_write_whole(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue(f"{backend}_stores")("s")
    learner = make_learner(KINDS["ftrl"], bits=12)
    trackers: dict[str, ModelTracker] = {}
    rng = np.random.default_rng(3)

    def batch(commit: bool = True) -> None:
        learner.run_ops(_ops(rng, 30))  # type: ignore[attr-defined]
        stage_change(store, trackers, NAME, learner)  # type: ignore[arg-type]
        if commit:
            store.commit({}, {"checkpoint": b"x"})

    for _ in range(3):
        batch()
    batch(commit=False)  # staged, never committed (the runner failed before its commit)
    batch()
    assert store.get_meta(NAME) == dump_learner(learner)
    batch(commit=False)
    with pytest.raises(StoreError):  # a failed commit (SQLite: after the delta's row)
        store.commit({}, {"checkpoint": object()})  # type: ignore[dict-item]
    batch()
    batch()
    assert _deltas(store) >= 1
    assert store.get_meta(NAME) == dump_learner(learner)


def test_a_delta_never_lands_after_another_writers_model(
    redis_stores: Callable[[str], Store], server: RedisServer
) -> None:
    ours = redis_stores("shared")
    assert isinstance(ours, RedisStore)
    learner = make_learner(KINDS["ogd"], bits=12)
    trackers: dict[str, ModelTracker] = {}
    rng = np.random.default_rng(5)
    for _ in range(3):
        learner.run_ops(_ops(rng, 30))  # type: ignore[attr-defined]
        stage_change(ours, trackers, NAME, learner)  # type: ignore[arg-type]
        ours.commit({}, {})
    other = RedisStore(server.url, prefix=ours.prefix)  # another writer, whole models
    other.commit({}, {NAME: dump_learner(make_learner(KINDS["ogd"], bits=12))})
    other.close()
    learner.run_ops(_ops(rng, 30))  # type: ignore[attr-defined]
    stage_change(ours, trackers, NAME, learner)  # type: ignore[arg-type]
    ours.commit({}, {})
    assert ours.get_meta(NAME) == dump_learner(learner)


def test_river_models_and_fenced_stores_stay_whole(
    sqlite_stores: Callable[[str], Store], server: RedisServer
) -> None:
    river = make_learner(LearnerConfig(kind="hoeffding"), bits=12)
    blob = stage_change(sqlite_stores("r"), {}, NAME, river)  # type: ignore[arg-type]
    assert blob is not None and blob == dump_learner(river)
    fenced = FencedRedisStore(server.url, prefix="updates-fenced")
    assert fenced.writes_model_deltas is False
    config = PipelineConfig.from_toml("")
    assert PipelineState.load(fenced, config).model_sink is None
    assert PipelineState.load(sqlite_stores("p"), config).model_sink is not None
    fenced.close()


def test_a_replay_restarted_midway_stores_the_model_of_an_uninterrupted_one(tmp_path: Path) -> None:
    """A replay stopped after 1,000 events and resumed (loading its model from the whole write
    and deltas, writing it whole once, then deltas again) ends with the model of one replay
    handed whole models."""
    events = list(generate(SyntheticConfig(users=150, items=80, days=6, seed=3)))
    source = tmp_path / "e.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert len(events) > 2000
    config = PipelineConfig.from_toml("[run]\nbatch_size = 200\n")
    store = tmp_path / "delta.db"
    liveprofile.replay(source, store=store, config=config, progress=False, limit=1000)
    liveprofile.replay(source, store=store, config=config, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SQLiteStore, "writes_model_deltas", False)
        liveprofile.replay(source, store=tmp_path / "whole.db", config=config, progress=False)
    delta, whole = SQLiteStore(store), SQLiteStore(tmp_path / "whole.db")
    names = [n for (n,) in whole.db.execute("SELECT name FROM meta WHERE name LIKE 'model/%'")]
    assert names and _deltas(delta) > 0
    for name in names:
        assert delta.get_meta(name) == whole.get_meta(name)
    delta.close()
    whole.close()

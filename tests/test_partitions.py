"""A store kept per partition read as one (``serving.partitions.PartitionedView``), on real
Redis and SQLite: the same pipeline run once over all events and once split by user into
partition scopes must give the same merged counts, metrics, item statistics and segments."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.core import Core
from liveprofile.engine.local import RunStats, apply_batch
from liveprofile.engine.state import PipelineState
from liveprofile.events.schema import Event, EventParser
from liveprofile.events.sources import Batch
from liveprofile.learn.base import Learner
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.stored import StoredModels
from liveprofile.profile.decay import decayed_value
from liveprofile.profile.items import decode_item
from liveprofile.profile.population import Population
from liveprofile.redis.store import RedisStore
from liveprofile.serving.partitions import PartitionedView
from liveprofile.serving.recommend import Recommender
from liveprofile.store import SQLiteStore, Store
from liveprofile.store.layout import ITEMS, POPULATION, PROFILES, check_config, read_checkpoint
from liveprofile.store.scoped import ScopedStore, registered_scopes

REDIS_URL = os.environ.get("LIVEPROFILE_TEST_REDIS", "redis://127.0.0.1:6379/15")
CONFIG = PipelineConfig.from_toml(
    '[run]\nmetrics_window = "1d"\n[segments]\nbuyers = "frequency >= 1"\n'
)
PARTS = 3


def _events() -> list[Event]:
    parser = EventParser()
    shop = SyntheticConfig(users=50, items=40, categories=4, days=5, seed=3)
    return [parser.parse_fields(fields) for fields in generate(shop)]


def _fill(store: Store, scope: str | None, events: list[Event]) -> None:
    view: Store = store if scope is None else ScopedStore(store, scope)
    state = PipelineState.load(view, CONFIG)
    core = Core(CONFIG)
    for start in range(0, len(events), 200):
        chunk = events[start : start + 200]
        batch = Batch(events=chunk, dead_letters=[], offset=start + len(chunk))
        apply_batch(core, state, view, f"src:{scope}", batch, RunStats())


@pytest.fixture(params=["redis", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """(one pipeline over every event, the same events split by user into partition scopes)"""
    if request.param == "redis":
        tag = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
        pair: list[Store] = [RedisStore(REDIS_URL, prefix=f"lp-part-{k}-{tag}") for k in "ab"]
    else:
        pair = [SQLiteStore(tmp_path / f"{k}.db") for k in "ab"]
    for s in pair:
        s.setup()
        check_config(s, CONFIG)
    events = _events()
    _fill(pair[0], None, events)
    users = sorted({e.user for e in events})
    for p in range(PARTS):
        mine = {u for k, u in enumerate(users) if k % PARTS == p}
        _fill(pair[1], f"shop.{p}", [e for e in events if e.user in mine])
    yield pair[0], pair[1]
    for s in pair:
        if isinstance(s, RedisStore):
            s.drop()
        s.close()


def test_partitions_read_as_one_store(stores: tuple[Store, Store]) -> None:
    whole, split = stores
    assert sorted(registered_scopes(split)) == [f"shop.{p}" for p in range(PARTS)]
    assert registered_scopes(whole) == {}
    view = PartitionedView(split)
    assert view.scopes() == [f"shop.{p}" for p in range(PARTS)]
    one, merged = read_checkpoint(whole), read_checkpoint(view)
    assert merged.events == one.events > 0
    assert merged.watermark == one.watermark
    assert merged.seq == sum(read_checkpoint(ScopedStore(split, s)).seq for s in view.scopes())
    assert view.count(PROFILES) == whole.count(PROFILES)

    blob = view.get_meta("metrics/convert")
    parts = [ScopedStore(split, s).get_meta("metrics/convert") for s in view.scopes()]
    assert blob is not None and all(parts)
    metrics = Prequential.from_bytes(blob)
    assert metrics.n == sum(Prequential.from_bytes(b).n for b in parts if b) > 0
    assert sum(w["n"] for w in metrics.windows()) == metrics.n

    # an item bought by users of several partitions: its counts add up to one pipeline's
    h = CONFIG.profile.counters_half_life_s
    want = {k: decode_item(b, k) for k, b in whole.scan(ITEMS)}
    got = {k: decode_item(b, k) for k, b in view.scan(ITEMS)}
    assert got.keys() == want.keys() and view.count(ITEMS) == len(want)
    assert any(
        sum(1 for s in view.scopes() if ScopedStore(split, s).read(ITEMS, [k])[0]) > 1 for k in want
    )
    for key, stats in want.items():
        mine = got[key]
        assert (mine.n, mine.value_n, mine.category) == (stats.n, stats.value_n, stats.category)
        parts = [ScopedStore(split, s).read(ITEMS, [key])[0] for s in view.scopes()]
        found = [decode_item(b, key) for b in parts if b is not None]
        assert mine.examples == dict(sum((Counter(f.examples) for f in found), Counter()))
        assert mine.positives == dict(sum((Counter(f.positives) for f in found), Counter()))
        assert decayed_value(mine.popularity, one.watermark, mine.anchor, h) == pytest.approx(
            decayed_value(stats.popularity, one.watermark, stats.anchor, h), rel=1e-9
        )
        assert view.read(ITEMS, [key]) == [dict(view.scan(ITEMS))[key]]

    # RFM standings: the partitions' histograms add up to every profile once
    pop = msgspec.msgpack.decode(view.get_meta(POPULATION) or b"", type=Population)
    assert (
        sum(pop.frequency)
        == view.count(PROFILES)
        == sum(
            sum(msgspec.msgpack.decode(b, type=Population).frequency)
            for b in (ScopedStore(split, s).get_meta(POPULATION) for s in view.scopes())
            if b is not None
        )
    )

    # segments: members are one pipeline's, the latest sizes too
    assert sorted(k for k, _ in view.scan("segment:buyers")) == sorted(
        k for k, _ in whole.scan("segment:buyers")
    )
    assert view.count("segment:buyers") == whole.count("segment:buyers") > 0

    # recommendations rank the merged popular items (a model per partition here: the whole
    # run's model stands in for the shared one Kafka workers keep)
    user = next(k for k, _ in whole.scan(PROFILES))
    models = StoredModels(whole)

    def learner(task: str, seq: int) -> Learner:
        found = models.get(task, 1)
        assert found is not None
        return found

    out = Recommender(view, learner=learner).recommend(user, k=5)
    assert len(out["items"]) == 5 and out["considered"] >= 5


def test_an_unscoped_store_passes_through(stores: tuple[Store, Store]) -> None:
    whole, _ = stores
    view = PartitionedView(whole)
    assert not view.partitioned() and view.scopes() == []
    assert view.get_meta("checkpoint") == whole.get_meta("checkpoint")
    assert view.get_meta("metrics/convert") == whole.get_meta("metrics/convert")
    assert list(view.scan(ITEMS)) == list(whole.scan(ITEMS))

"""The learned ranker trained where it belongs: in the pipeline every ``ranker.every`` of event
time, from the command line over a store (``liveprofile ranker train``), and shared by every
partition of a store kept per Kafka partition (real Redis)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from test_partitions import CONFIG as PART_CONFIG
from test_partitions import PARTS, _events, _fill

import liveprofile
from liveprofile.cli import main
from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.errors import StoreError
from liveprofile.learn.base import Learner
from liveprofile.learn.stored import StoredModels
from liveprofile.redis.store import RedisStore
from liveprofile.serving.learned import BLEND, FEATURES, Ranker, load_ranker, ranker_meta
from liveprofile.serving.partitions import PartitionedView
from liveprofile.serving.ranklearn import learn_round
from liveprofile.serving.ranktrain import purchases_in
from liveprofile.serving.recommend import Recommender
from liveprofile.store import SQLiteStore
from liveprofile.store.layout import PROFILES, check_config, read_checkpoint
from liveprofile.store.scoped import ScopedStore

REDIS_URL = os.environ.get("LIVEPROFILE_TEST_REDIS", "redis://127.0.0.1:6379/15")
DAY = 86400.0
TRAINED = '[ranker]\nevery = "1d"\nusers = 60\n[run]\nbatch_size = 250\n'


def _shop(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    events = list(generate(SyntheticConfig(users=120, items=60, days=8, seed=4)))
    path = folder / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path, events


def _served_in_ranker_order(store: SQLiteStore, ranker: Ranker) -> None:
    """Each of a few users' recommendations is ordered by ``ranker``'s scores."""
    users = [u for u, _ in store.scan(PROFILES, limit=5)]
    for user in users:
        out = Recommender(store).recommend(user, k=10)
        rows = np.array([[r["features"][f] for f in FEATURES] for r in out["items"]])
        scores = ranker.score(rows).tolist()
        assert [r["rank_score"] for r in out["items"]] == scores
        assert scores == sorted(scores, reverse=True)


def test_a_replay_trains_the_ranker_and_serving_uses_it(tmp_path: Path) -> None:
    path, _ = _shop(tmp_path)
    config = PipelineConfig.from_toml(TRAINED)
    summary = liveprofile.replay(path, store=tmp_path / "s.db", config=config, progress=False)
    learned = summary["ranker"]
    assert learned["rounds"] >= 6 and learned["users"] > 20 and learned["pairs"] > 0
    store = SQLiteStore(tmp_path / "s.db")
    ranker = load_ranker(store, learned["task"])
    assert ranker.state.users == learned["users"] and ranker.state.pairs == learned["pairs"]
    assert tuple(ranker.state.average) != BLEND  # it moved away from the starting weights
    _served_in_ranker_order(store, ranker)
    store.close()

    # the same events in the same batches teach the same ranker
    again = liveprofile.replay(path, store=tmp_path / "t.db", config=config, progress=False)
    assert again["ranker"] == learned
    other = SQLiteStore(tmp_path / "t.db")
    assert other.get_meta(ranker_meta(learned["task"])) == SQLiteStore(tmp_path / "s.db").get_meta(
        ranker_meta(learned["task"])
    )
    other.close()


def test_a_replay_with_ranker_rounds_off_keeps_the_starting_weights(tmp_path: Path) -> None:
    path, _ = _shop(tmp_path)
    assert PipelineConfig().ranker.every_s == 0  # off unless configured
    config = PipelineConfig.from_toml('[ranker]\nevery = "0s"\n[run]\nbatch_size = 250\n')
    summary = liveprofile.replay(path, store=tmp_path / "s.db", config=config, progress=False)
    assert "ranker" not in summary
    store = SQLiteStore(tmp_path / "s.db")
    assert store.get_meta(ranker_meta("convert")) is None
    store.close()


def test_the_command_line_trains_a_store_on_later_purchases(tmp_path: Path) -> None:
    path, events = _shop(tmp_path)
    split = events[0]["ts"] + 6 * DAY
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(e) + "\n" for e in events if e["ts"] < split))
    config = PipelineConfig.from_toml('[ranker]\nevery = "0s"\n')
    liveprofile.replay(history, store=tmp_path / "s.db", config=config, progress=False)
    runner = CliRunner()
    store_arg = ["--store", str(tmp_path / "s.db")]
    shown = runner.invoke(main, ["ranker", "show", *store_arg])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["users"] == 0  # nothing learned yet

    result = runner.invoke(main, ["ranker", "train", str(path), *store_arg, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    store = SQLiteStore(tmp_path / "s.db")
    watermark = read_checkpoint(store).watermark
    parser = liveprofile.api.open_source(path)
    parsed = [e for b in parser.batches(0, 1000) for e in b.events]
    bought = purchases_in(parsed, watermark, watermark + 14 * DAY, ["purchase"])
    assert out["buyers"] == len(bought) > 0 and 0 < out["users"] <= len(bought)
    stored = load_ranker(store, out["task"])
    assert stored.state.users == out["users"] and stored.weights == out["weights"]
    _served_in_ranker_order(store, stored)
    store.close()
    shown = runner.invoke(main, ["ranker", "show", *store_arg])
    assert json.loads(shown.output)["weights"] == out["weights"]

    for bad in (["--within", "0s"], ["--task", "nope"]):
        failed = runner.invoke(main, ["ranker", "train", str(path), *store_arg, *bad])
        assert failed.exit_code != 0 and "error" in failed.output


def test_one_ranker_per_task_is_shared_by_every_partition_on_redis(tmp_path: Path) -> None:
    tag = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    whole = RedisStore(REDIS_URL, prefix=f"lp-rank-whole-{tag}")
    split = RedisStore(REDIS_URL, prefix=f"lp-rank-split-{tag}")
    try:
        for s in (whole, split):
            s.setup()
            check_config(s, PART_CONFIG)
        events = _events()
        _fill(whole, None, events)
        users = sorted({e.user for e in events})
        for p in range(PARTS):
            mine = {u for k, u in enumerate(users) if k % PARTS == p}
            _fill(split, f"shop.{p}", [e for e in events if e.user in mine])
        view = PartitionedView(split)
        assert view.partitioned()
        models = StoredModels(whole)  # stands in for the shared model Kafka workers keep

        def learner(task: str, seq: int) -> Learner:
            found = models.get(task, 1)
            assert found is not None
            return found

        rec = Recommender(view, learner=learner)
        bought = {u: {f"i{k:05d}" for k in range(1, 41, 3)} for u in users[:30]}
        out = learn_round(rec, bought)  # saved through the view: one blob for all partitions
        blob = split.get_meta(ranker_meta(out["task"]))
        assert blob is not None and out["users"] > 0
        for scope in view.scopes():
            assert split.get_meta(f"{ranker_meta(out['task'])}@{scope}") is None
            assert ScopedStore(split, scope).get_meta(ranker_meta(out["task"])) == blob
        assert load_ranker(view, out["task"]).weights == out["weights"]

        # what a worker saves through its scope is the same one ranker
        first = ScopedStore(split, view.scopes()[0])
        again = learn_round(Recommender(first, learner=learner), bought, users=users[:3])
        assert load_ranker(view, again["task"]).state.users == out["users"] + again["users"]

        # serving over the view ranks with it
        user = next(u for u in users if u in bought)
        served = Recommender(view, learner=learner).recommend(user, k=5)
        rows = np.array([[r["features"][f] for f in FEATURES] for r in served["items"]])
        ranked = load_ranker(view, served["task"]).score(rows).tolist()
        assert [r["rank_score"] for r in served["items"]] == ranked

        # the view writes nothing else of a partitioned store
        with pytest.raises(StoreError, match="written by its workers"):
            view.commit({PROFILES: {"u": b"x"}}, {ranker_meta("convert"): blob})
        with pytest.raises(StoreError, match="written by its workers"):
            view.commit({}, {"checkpoint": b"x"})
    finally:
        for s in (whole, split):
            s.drop()
            s.close()

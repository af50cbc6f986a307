"""The learned ranking: it learns what users buy next, deterministically; its state survives
SQLite and Redis; a real ``liveprofile serve`` ranks with what the store holds."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_server import CliServer

import liveprofile
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.errors import StateVersionError
from liveprofile.profile.state import decode_profile
from liveprofile.redis.store import RedisStore
from liveprofile.serving.learned import (
    BLEND,
    FEATURES,
    Ranker,
    RankerState,
    load_ranker,
    ranker_meta,
    recent_items,
    save_ranker,
)
from liveprofile.serving.ranklearn import RoundError, learn_round, ndcg, next_purchases
from liveprofile.serving.recommend import Recommender
from liveprofile.store import SQLiteStore
from liveprofile.store.memory import MemoryStore

TOKEN = "ranker-token-321"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REDIS_URL = os.environ.get("LIVEPROFILE_TEST_REDIS", "redis://127.0.0.1:6379/15")
SHOP = SyntheticConfig(users=60, items=80, categories=5, days=9, seed=5)
DAY = 86400.0
HISTORY = FEATURES.index("history")
POPULARITY = FEATURES.index("popularity")


def _users(seed: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generated rounds where the user buys next what they bought before, not what is popular:
    ``bought`` follows the history feature, while popularity is noise of a larger scale."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        rows = rng.normal(size=(40, len(FEATURES)))
        rows[:, POPULARITY] *= 3.0
        bought = rows[:, HISTORY] + 0.3 * rng.normal(size=40) > 1.5
        out.append((rows, bought))
    return out


def _hit_rate(ranker: Ranker, rounds: list[tuple[np.ndarray, np.ndarray]]) -> float:
    hits = [
        bool(bought[np.argsort(-ranker.score(rows), kind="stable")[:5]].any())
        for rows, bought in rounds
    ]
    return float(np.mean(hits))


def test_it_learns_to_prefer_what_users_buy_next() -> None:
    ranker = Ranker()
    held_out = _users(1, 200)
    before = _hit_rate(ranker, held_out)
    for rows, bought in _users(0, 300):
        ranker.learn(rows, bought)
    after = _hit_rate(ranker, held_out)
    assert after > before + 0.2
    assert ranker.weights["history"] > ranker.weights["popularity"]
    assert ranker.state.users == 300 and ranker.state.pairs > 0


def test_nothing_to_order_learns_nothing() -> None:
    ranker = Ranker()
    rows = np.ones((4, len(FEATURES)))
    assert ranker.learn(rows, np.zeros(4, dtype=bool)) == 0
    assert ranker.learn(rows, np.ones(4, dtype=bool)) == 0
    assert tuple(ranker.state.weights) == BLEND and ranker.state.users == 2


def test_learning_is_deterministic_across_a_store_round_trip() -> None:
    rounds = _users(2, 60)
    straight = Ranker()
    for rows, bought in rounds:
        straight.learn(rows, bought)
    store = MemoryStore()
    halves = Ranker()
    for rows, bought in rounds[:30]:
        halves.learn(rows, bought)
    save_ranker(store, "convert", halves)
    resumed = load_ranker(store, "convert")
    assert resumed.state == halves.state
    for rows, bought in rounds[30:]:
        resumed.learn(rows, bought)
    assert resumed.state == straight.state  # bit for bit, negatives drawn alike


def test_a_ranker_from_another_version_is_refused() -> None:
    store = MemoryStore()
    store.commit({}, {ranker_meta("convert"): b"\x09junk"})
    with pytest.raises(StateVersionError, match="learn it again"):
        load_ranker(store, "convert")
    state = RankerState(["model"], [1.0], [0.0])
    with pytest.raises(StateVersionError, match="features"):
        Ranker(state)


@dataclass
class Shop:
    folder: Path
    events: list[dict[str, Any]]
    store: Path
    split: float


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    """A store replayed up to day 6 of 9 (the events after it are "what happened next")."""
    folder = tmp_path_factory.mktemp("ranker")
    events = [dict(e) for e in generate(SHOP)]
    split = SHOP.start_ts + 6 * DAY
    path = folder / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events if float(e["ts"]) < split))
    liveprofile.replay(path, store=folder / "shop.db", progress=False)
    return Shop(folder, events, folder / "shop.db", split)


def test_a_round_on_a_replayed_stream_is_saved_and_served(shop: Shop, tmp_path: Path) -> None:
    bought = next_purchases(shop.events, shop.split, shop.split + 3 * DAY)
    db = SQLiteStore(shop.store)
    try:
        rec = Recommender(db)
        first = learn_round(rec, bought)
        stored = load_ranker(db, "convert")
        assert stored.state.users == first["users"] > 0 and first["pairs"] > 0
        assert stored.weights == first["weights"] != dict(zip(FEATURES, BLEND, strict=True))
        # a round scores each user's ranking before learning from that user (test, then
        # train): for its first user, the ranking served now, with what the first round learned
        user = "u00036"
        served = [r["item"] for r in rec.recommend(user, k=10)["items"]]
        second = learn_round(rec, bought, users=[user])
        assert second["users"] == 1
        assert second["hit_rate"] == float(bool(set(served) & bought[user]))
        assert second["ndcg"] == pytest.approx(ndcg(served, bought[user]))
        assert load_ranker(db, "convert").state.users == first["users"] + 1
        with pytest.raises(RoundError):
            learn_round(rec, {"nobody-at-all": {"i1"}})
    finally:
        db.close()


def test_serving_ranks_with_the_stored_ranker(shop: Shop, tmp_path: Path) -> None:
    """A ranker that weighs popularity alone, saved in the store, is what the server uses."""
    store = tmp_path / "copy.db"
    store.write_bytes(shop.store.read_bytes())
    db = SQLiteStore(store)
    user = sorted(next_purchases(shop.events, shop.split, shop.split + 3 * DAY))[0]
    only = [1.0 if f == "popularity" else 0.0 for f in FEATURES]
    zero = [0.0] * len(FEATURES)
    save_ranker(db, "convert", Ranker(RankerState(list(FEATURES), only, zero, average=only)))
    db.close()
    running = CliServer(
        ["serve", "--store", str(store)], {"LIVEPROFILE_READ_TOKEN": TOKEN}, tmp_path / "s.log"
    )
    try:
        r = running.client.get(f"/v1/recommendations/{user}", params={"k": 1000}, headers=AUTH)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rank"] == "learned"
        items = body["items"]
        for row in items:
            assert row["rank_score"] == pytest.approx(row["features"]["popularity"])
            assert sum(row["ranking"].values()) == pytest.approx(row["rank_score"], abs=1e-5)
        keys = [(-row["rank_score"], row["item"]) for row in items]
        assert keys == sorted(keys)
        blend = running.client.get(
            f"/v1/recommendations/{user}", params={"k": 1000, "rank": "blend"}, headers=AUTH
        ).json()["items"]
        assert [row["item"] for row in blend] != [row["item"] for row in items]
        posted = running.client.post(
            f"/v1/recommendations/{user}", json={"k": 3}, headers=AUTH
        ).json()
        assert [row["item"] for row in posted["items"]] == [row["item"] for row in items[:3]]
    finally:
        running.stop()


def test_the_users_recent_items_are_candidates(shop: Shop) -> None:
    db = SQLiteStore(shop.store)
    try:
        rec = Recommender(db)
        user = max((decode_profile(b) for _, b in db.scan("profile")), key=lambda p: p.n).user
        (blob,) = db.read("profile", [user])
        recent = recent_items(decode_profile(blob, user))
        assert recent
        widened = rec.recommend(user, k=1000, interests=1, overall=0)["items"]
        narrow = rec.recommend(user, k=1000, interests=1, overall=0, recent=False)["items"]
        assert set(recent) <= {r["item"] for r in widened}
        assert {r["item"] for r in widened} == {r["item"] for r in narrow} | set(recent)
        assert all(r["features"]["recent"] == (r["item"] in recent) for r in widened)
    finally:
        db.close()


def test_redis_and_sqlite_keep_the_same_ranker(shop: Shop, tmp_path: Path) -> None:
    prefix = "lp-ranker-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    ranker = Ranker()
    for rows, bought in _users(3, 20):
        ranker.learn(rows, bought)
    redis_store = RedisStore(REDIS_URL, prefix=prefix)
    sqlite_store = SQLiteStore(tmp_path / "r.db")
    try:
        redis_store.setup()
        sqlite_store.setup()
        for store in (redis_store, sqlite_store):
            save_ranker(store, "convert", ranker)
            assert load_ranker(store, "convert").state == ranker.state
    finally:
        redis_store.drop()
        redis_store.close()
        sqlite_store.close()


def test_ndcg_is_one_for_a_perfect_list() -> None:
    assert ndcg(["a", "b"], {"a", "b"}) == pytest.approx(1.0)
    assert ndcg(["x", "y"], {"a"}) == 0.0

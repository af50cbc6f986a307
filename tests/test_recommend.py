"""Recommendations: ranking, reasons and candidates, through the Python API, a real
``liveprofile serve`` and the real command line, on stores filled by a real replay."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_server import CliServer

import liveprofile
from liveprofile.datasets.synthetic import SyntheticConfig, generate, write_jsonl
from liveprofile.errors import InvalidRequest, ProfileNotFound, TaskNotFound
from liveprofile.profile.items import decode_item
from liveprofile.profile.popular import popularity_key
from liveprofile.profile.state import decode_profile
from liveprofile.redis.store import RedisStore
from liveprofile.serving.recommend import POPULAR_PER_CATEGORY, Recommender
from liveprofile.store import SQLiteStore, open_store
from liveprofile.store.layout import read_checkpoint

TOKEN = "rec-token-789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 30.0
REDIS_URL = os.environ.get("LIVEPROFILE_TEST_REDIS", "redis://127.0.0.1:6379/15")
SHOP = SyntheticConfig(users=40, items=80, categories=5, days=6, seed=11)


@dataclass
class Served:
    folder: Path
    events: Path
    store: Path
    user: str
    items: list[str]
    client: httpx.Client


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("recommend")
    events = folder / "events.jsonl"
    write_jsonl(events, SHOP)
    store = folder / "shop.db"
    liveprofile.replay(events, store=store, progress=False)
    db = SQLiteStore(store)
    items = sorted(key for key, _ in db.scan("item"))
    # the most active user: many interests and outcomes, so the ranking is not a tie
    profiles = [decode_profile(blob) for _, blob in db.scan("profile")]
    db.close()
    user = max(profiles, key=lambda p: (p.n, p.user)).user
    running = CliServer(
        ["serve", "--store", str(store)], {"LIVEPROFILE_READ_TOKEN": TOKEN}, folder / "serve.log"
    )
    yield Served(folder, events, store, user, items, running.client)
    running.stop()


def _score(served: Served, item: str, task: str, top: int = 10) -> dict[str, Any]:
    params: dict[str, str | int] = {"user": served.user, "item": item, "task": task, "top": top}
    r = served.client.get("/v1/score", params=params, headers=AUTH)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_ranking_is_the_order_of_the_individual_scores(served: Served) -> None:
    candidates = [*served.items[::2], "never-seen-item"]
    body = {"candidates": candidates, "k": len(candidates), "task": "convert", "rank": "model"}
    r = served.client.post(f"/v1/recommendations/{served.user}", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["task"], out["candidates"], out["considered"]) == ("convert", "request", 41)
    single = {item: _score(served, item, "convert")["score"] for item in candidates}
    expected = sorted(candidates, key=lambda item: (-single[item], item))
    assert [r["item"] for r in out["items"]] == expected
    # one batched prediction gives the very probabilities of one-by-one scoring
    assert [r["score"] for r in out["items"]] == [single[item] for item in expected]
    assert len(set(single.values())) > len(candidates) // 2  # the order is not one of ties
    top3 = served.client.post(
        f"/v1/recommendations/{served.user}", json={**body, "k": 3}, headers=AUTH
    ).json()
    assert [r["item"] for r in top3["items"]] == expected[:3]


def test_the_blend_multiplies_score_popularity_interest_and_history(served: Served) -> None:
    candidates = [*served.items[1::2], "never-seen-item"]
    body = {"candidates": candidates, "k": len(candidates), "task": "convert", "rank": "blend"}
    r = served.client.post(f"/v1/recommendations/{served.user}", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["rank"] == "blend"
    db = SQLiteStore(served.store)
    try:
        (blob,) = db.read("profile", [served.user])
        assert blob is not None
        p = decode_profile(blob)
        stats = {key: decode_item(b) for key, b in db.scan("item")}
        watermark = read_checkpoint(db).watermark
        h = Recommender(db).core.updater.h_counters  # the items' popularity half-life
    finally:
        db.close()
    total = sum(p.interests.values())
    expected = {}
    for row in out["items"]:
        item, it = row["item"], stats.get(row["item"])
        single = _score(served, item, "convert")["score"]
        assert row["score"] == single  # the model's P(y=1) is unchanged by the blend
        pop = 0.0 if it is None else it.popularity * 2 ** ((it.anchor - watermark) / h)
        share = 0.0 if it is None else p.interests.get(it.category or "", 0.0) / total
        seen = p.key_outcome_rate("convert", item, 0.5, 1.0)[1]
        expected[item] = (
            math.log(single) + math.log(max(pop, 0.5)) + math.log(max(share, 1e-3))
            + math.log1p(seen)
        )  # fmt: skip
        assert row["rank_score"] == pytest.approx(expected[item], abs=1e-9)
        assert sum(row["ranking"].values()) == pytest.approx(expected[item], abs=1e-5)
    order = sorted(expected, key=lambda item: (-expected[item], item))
    assert [row["item"] for row in out["items"]] == order
    # the blend changes the order here: popularity and interest matter, not only the model
    by_model = sorted(expected, key=lambda item: (-_score(served, item, "convert")["score"], item))
    assert order != by_model
    assert expected["never-seen-item"] < max(expected.values())  # floored, not ruled out
    bad = served.client.get(
        f"/v1/recommendations/{served.user}", params={"rank": "nope"}, headers=AUTH
    )
    assert bad.status_code == 400
    assert "rank must be one of learned, blend, model" in bad.json()["error"]


def test_reasons_and_shared_features_add_up_to_the_logit(served: Served) -> None:
    out = liveprofile.recommend(
        served.store, served.user, k=5, candidates=served.items[:30], task="convert", top=1000
    )
    shared = sum(c for _, c in out["shared"])
    assert out["shared"] and all(name for name, _ in out["shared"])
    for r in out["items"]:
        assert r["reason"], r
        total = shared + sum(c for _, c in r["reason"])
        assert total == pytest.approx(math.log(r["score"] / (1 - r["score"])), abs=1e-9)
        # an item's own features tell it apart: its item id is always one of them
        assert f"item={r['item']}" in {name for name, _ in r["reason"]}
    shared_names = {name for name, _ in out["shared"]}
    assert f"user={served.user}" in shared_names and "bias" in shared_names


def test_one_candidate_gets_the_features_of_the_score_endpoint(served: Served) -> None:
    item = served.items[3]
    out = liveprofile.recommend(served.store, served.user, candidates=[item], top=1000)
    (only,) = out["items"]
    expected = _score(served, item, out["task"], top=1000)
    assert out["shared"] == []
    assert only["score"] == expected["score"]
    assert only["reason"] == expected["top_features"]
    few = liveprofile.recommend(served.store, served.user, candidates=[item], top=3)
    assert few["items"][0]["reason"] == expected["top_features"][:3]


def _interest_categories(store: Path, user: str) -> list[str]:
    db = SQLiteStore(store)
    categories = {decode_item(blob).category for _, blob in db.scan("item")}
    (blob,) = db.read("profile", [user])
    db.close()
    assert blob is not None
    p = decode_profile(blob)
    return [t for t in sorted(p.interests, key=lambda t: -p.interests[t]) if t in categories]


def test_candidates_come_from_the_top_interest(served: Served) -> None:
    top_category = _interest_categories(served.store, served.user)[0]
    db = SQLiteStore(served.store)
    try:
        out = Recommender(db).recommend(served.user, k=1000, interests=1, overall=0, recent=False)
        in_category = [
            (key, decode_item(blob))
            for key, blob in db.scan("item")
            if decode_item(blob).category == top_category
        ]
    finally:
        db.close()
    assert out["candidates"] == "interests"
    assert {r["category"] for r in out["items"]} == {top_category}
    # every item of that category is a candidate (fewer than the index keeps per category)
    assert len(in_category) < POPULAR_PER_CATEGORY
    assert sorted(r["item"] for r in out["items"]) == sorted(key for key, _ in in_category)


def test_the_popular_index_keeps_the_most_popular(served: Served) -> None:
    db = SQLiteStore(served.store)
    try:
        recommender = Recommender(db, per_category=3)
        index = recommender.popular(seq=0)
        h = recommender.core.updater.h_counters
        stats = {key: decode_item(blob) for key, blob in db.scan("item")}
    finally:
        db.close()
    for category, items in index.by_category.items():
        members = [k for k, s in stats.items() if s.category == category]
        best = sorted(members, key=lambda k: (-popularity_key(stats[k], h), k))[:3]
        assert items == best


def test_the_default_candidates_follow_the_interests(served: Served) -> None:
    r = served.client.get(f"/v1/recommendations/{served.user}", params={"k": 7}, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    # this store has views and purchases, no ratings: 'like' never learned, 'convert' did
    assert (out["task"], out["candidates"], len(out["items"])) == ("convert", "interests", 7)
    db = SQLiteStore(served.store)
    try:
        index = Recommender(db).popular(0)
    finally:
        db.close()
    top3 = _interest_categories(served.store, served.user)[:3]
    pool = set(index.for_interests(top3, POPULAR_PER_CATEGORY)) | set(index.overall)
    assert out["considered"] == len(pool)
    assert {i["item"] for i in out["items"]} <= pool
    keys = [i["rank_score"] for i in out["items"]]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "words"),
    [
        ("GET", "/v1/recommendations/nobody-here", None, 404, "no profile for user 'nobody-here'"),
        ("GET", "/v1/recommendations/{user}?task=nope", None, 404, "no task 'nope'"),
        ("POST", "/v1/recommendations/{user}", {"task": "nope"}, 404, "like, convert, repurchase"),
        ("POST", "/v1/recommendations/{user}", {"candidates": []}, 400, "1 to 1000 candidate"),
    ],
)
def test_clear_errors(
    served: Served, method: str, url: str, body: Any, status: int, words: str
) -> None:
    r = served.client.request(method, url.format(user=served.user), json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_limits_and_token(served: Served) -> None:
    url = f"/v1/recommendations/{served.user}"
    too_many = {"candidates": [f"i{n}" for n in range(1001)]}
    assert served.client.post(url, json=too_many, headers=AUTH).status_code == 422
    assert served.client.get(url, params={"k": 0}, headers=AUTH).status_code == 422
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert served.client.get(url, headers=headers).status_code == 401
        assert served.client.post(url, json={}, headers=headers).status_code == 401
    paths = served.client.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/recommendations/{user}"]) == {"get", "post"}


def test_python_api_errors(served: Served) -> None:
    with pytest.raises(ProfileNotFound):
        liveprofile.recommend(served.store, "nobody-here")
    with pytest.raises(TaskNotFound, match="this store has like, convert, repurchase"):
        liveprofile.recommend(served.store, served.user, task="nope")
    with pytest.raises(InvalidRequest, match="k must be within"):
        liveprofile.recommend(served.store, served.user, k=0)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "liveprofile.cli", "recommend", *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env)


def test_cli_json_equals_the_python_api(served: Served) -> None:
    done = _cli(served.user, "--store", str(served.store), "-k", "4", "--top", "2", "--json")
    assert done.returncode == 0, done.stderr
    expected = liveprofile.recommend(served.store, served.user, k=4, top=2)
    assert json.loads(done.stdout) == json.loads(json.dumps(expected))


def test_cli_table_and_errors(served: Served) -> None:
    picks = ",".join(served.items[:5])
    done = _cli(served.user, "--store", str(served.store), "-k", "2", "--candidates", picks)
    assert done.returncode == 0, done.stderr
    best = liveprofile.recommend(served.store, served.user, k=2, candidates=served.items[:5])
    for r in best["items"]:
        assert r["item"] in done.stdout and f"{r['score']:.4f}" in done.stdout
    assert "of 5 given candidates" in done.stdout
    done = _cli("nobody-here", "--store", str(served.store))
    assert done.returncode == 1 and "no profile for user 'nobody-here'" in done.stderr
    done = _cli(served.user, "--store", str(served.store), "--task", "nope")
    assert done.returncode == 1 and "no task 'nope'" in done.stderr


def test_the_index_follows_the_checkpoint(tmp_path: Path) -> None:
    events = list(generate(SHOP))
    half = len(events) // 2
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    first.write_text("".join(json.dumps(e) + "\n" for e in events[:half]))
    rest.write_text("".join(json.dumps(e) + "\n" for e in events[half:]))
    store = tmp_path / "shop.db"
    liveprofile.replay(first, store=store, progress=False)
    early = {e["item_id"] for e in events[:half]}
    late = {e["item_id"] for e in events[half:]} - early
    assert late, "the second half brings items the first did not have"
    reader = open_store(str(store), read_only=True)
    try:
        recommender = Recommender(reader)
        before = recommender.popular(recommender.checkpoint().seq)
        assert not late & set(before.overall)
        liveprofile.replay(rest, store=store, progress=False)
        after = recommender.popular(recommender.checkpoint().seq)
        indexed = {item for items in after.by_category.values() for item in items}
        assert late <= indexed
    finally:
        reader.close()


def test_redis_and_sqlite_give_the_same_recommendations(served: Served, tmp_path: Path) -> None:
    prefix = "lp-rec-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    url = f"{REDIS_URL}?prefix={prefix}"
    liveprofile.replay(served.events, store=url, dead_letters=tmp_path / "d.jsonl", progress=False)
    redis_store = RedisStore(REDIS_URL, prefix=prefix)
    try:
        via_redis = liveprofile.recommend(redis_store, served.user, k=10, top=3)
        via_sqlite = liveprofile.recommend(served.store, served.user, k=10, top=3)
        assert via_redis == via_sqlite
        assert len(via_redis["items"]) == 10
    finally:
        redis_store.drop()
        redis_store.close()

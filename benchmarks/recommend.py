"""Recommendation quality against ground truth: liveprofile vs popularity and random baselines.

The synthetic shop (``liveprofile.datasets.synthetic``) plants each user's category preferences
and each item's quality and popularity. Events before ``--split-day`` are replayed into a SQLite
store; then, for every user who buys anything after the split, each system proposes 10 items
and we count how many users bought at least one of them after the split (hit rate@10) and how
high the bought items rank (NDCG@10, binary relevance). Systems, in one run on the same users:

- liveprofile: ``Recommender.recommend(user, k=10)``: candidates from the popular items of the
  user's top interest categories, ranked by the ``convert`` model with the live profile;
- liveprofile ranking every item: the same model over the whole catalogue as candidates;
- the same candidates by popularity: liveprofile's candidates in decayed-popularity order, no
  model (what the ranking adds over candidate generation);
- liveprofile score x popularity: the same candidates by P(convert | view) times the decayed
  popularity (a proxy for P(view)); an experiment, not what the API returns;
- popular overall: the 10 items with the highest decayed popularity, the same for everyone;
- random: 10 items drawn uniformly (seeded);
- planted truth: items by P(view) x P(purchase | view) from the generator's own parameters at
  the split, an upper bound no learner can beat on average.

    python benchmarks/recommend.py            # default shop: 500 users, 400 items, 28 days
    python benchmarks/recommend.py --users 2000 --items 2000 --days 28 --split-day 21
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import liveprofile
from liveprofile.datasets.synthetic import SyntheticConfig, generate, ground_truth
from liveprofile.events.sources import JsonlSource
from liveprofile.profile.items import decode_item
from liveprofile.profile.popular import popularity_key
from liveprofile.serving.recommend import Recommender
from liveprofile.store import SQLiteStore

K = 10


def ndcg(ranked: list[str], truth: set[str], k: int = K) -> float:
    dcg = sum(1 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in truth)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(truth))))
    return dcg / ideal


def planted(config: SyntheticConfig, users: list[str], ts: float) -> dict[str, list[str]]:
    """Top 10 per user by the generator's P(view the item) x P(purchase | view) at ``ts``."""
    truth = ground_truth(config)
    n = len(truth.item_ids)
    items = np.arange(n)
    out = {}
    for user in users:
        u = np.full(n, truth.user_index[user])
        times = np.full(n, ts)
        pref = truth.preference_rows(u, times)[0][truth.item_category]
        p = pref * truth.item_popularity
        p = (
            p
            * truth.cart_probabilities(u, items, times)
            * truth.purchase_probabilities(u, items, times)
        )
        best = np.argsort(-p, kind="stable")[:K]
        out[user] = [truth.item_ids[i] for i in best]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--categories", type=int, default=12)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--split-day", type=float, default=21.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = SyntheticConfig(
        users=args.users,
        items=args.items,
        categories=args.categories,
        days=args.days,
        seed=args.seed,
    )
    split = config.start_ts + args.split_day * 86400
    events = list(generate(config))
    train = [e for e in events if float(e["ts"]) < split]  # type: ignore[arg-type]
    bought: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if float(e["ts"]) >= split and e["type"] == "purchase":  # type: ignore[arg-type]
            bought[str(e["user_id"])].add(str(e["item_id"]))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in train))
        t0 = time.perf_counter()
        summary = liveprofile.replay(JsonlSource(path), store=Path(tmp) / "shop.db", progress=False)
        replay_s = time.perf_counter() - t0
        store = SQLiteStore(Path(tmp) / "shop.db")
        rec = Recommender(store)
        h = rec.core.updater.h_counters
        popularity = {k: popularity_key(decode_item(b), h) for k, b in store.scan("item")}
        catalogue = sorted(popularity)
        known = {key for key, _ in store.scan("profile")}
        users = sorted(u for u in bought if u in known)
        rng = np.random.default_rng(args.seed)
        lists: dict[str, dict[str, list[str]]] = defaultdict(dict)
        seconds = 0.0
        considered = 0
        for user in users:
            t0 = time.perf_counter()
            out = rec.recommend(user, k=K)
            seconds += time.perf_counter() - t0
            considered += out["considered"]
            lists["liveprofile"][user] = [r["item"] for r in out["items"]]
            whole = rec.recommend(user, k=K, candidates=catalogue)
            lists["liveprofile, every item a candidate"][user] = [r["item"] for r in whole["items"]]
            scored = rec.recommend(user, k=1000)["items"]
            by_both = sorted(
                scored, key=lambda r: (-(math.log(r["score"]) + popularity[r["item"]]), r["item"])
            )
            lists["liveprofile score x popularity (experiment)"][user] = [
                r["item"] for r in by_both[:K]
            ]
            pool = [r["item"] for r in scored]
            pool.sort(key=lambda item: (-popularity[item], item))
            lists["the same candidates by popularity"][user] = pool[:K]
            lists["popular overall"][user] = sorted(catalogue, key=lambda i: -popularity[i])[:K]
            lists["random"][user] = list(rng.choice(catalogue, size=K, replace=False))
        lists["planted truth (upper bound)"] = planted(config, users, split)
        store.close()

    print(
        f"synthetic shop: {config.users} users, {config.items} items, {config.categories} "
        f"categories, {config.days} days, seed {config.seed}; replayed {summary['events']:,} "
        f"events before day {args.split_day:g} in {replay_s:.1f} s "
        f"(convert AUC {summary['tasks']['convert']['auc']:.4f})"
    )
    print(
        f"evaluated on {len(users)} users who buy after the split "
        f"({sum(len(b) for u, b in bought.items() if u in known) / len(users):.1f} distinct "
        f"items bought each on average)"
    )
    print(f"\n| system | hit rate@{K} | NDCG@{K} |\n|---|---:|---:|")
    for name, per_user in lists.items():
        hits = np.mean([bool(set(per_user[u][:K]) & bought[u]) for u in users])
        gain = np.mean([ndcg(per_user[u], bought[u]) for u in users])
        print(f"| {name} | {hits:.3f} | {gain:.3f} |")
    print(
        f"\nliveprofile: {seconds / len(users) * 1000:.1f} ms per recommendation "
        f"({considered / len(users):.0f} candidates scored on average, SQLite, one core)"
    )


if __name__ == "__main__":
    main()

"""Recommendation quality against what users bought later: liveprofile vs popularity and random.

Events before a split are replayed into a SQLite store; then, for every user who buys anything
in the period after the split, each system proposes 10 items and we count how many users bought
at least one of them in that period (hit rate@10) and how high the bought items rank (NDCG@10,
binary relevance). Systems, in one run on the same users:

- liveprofile: ``Recommender.recommend(user, k=10)`` as served: the popular items of the user's
  top interest categories and the most popular items overall, ordered by the blend of the task's
  P(y=1) with popularity, interest and the user's history of the item
  (:mod:`liveprofile.serving.ranking`);
- the blend without one of its factors (ablations; what each factor adds);
- liveprofile, the model alone (``rank="model"``) over the same candidates;
- liveprofile before the blend: the model alone over the interests' candidates only (the
  previous default);
- the same interest candidates by popularity, no model;
- popular overall: the 10 items with the highest decayed popularity, the same for everyone;
- random: 10 items drawn uniformly (seeded);
- planted truth (synthetic shop only): items by P(view) x P(purchase | view) from the
  generator's own parameters at the split, an upper bound no learner can beat on average.

Datasets: the synthetic shop (``liveprofile.datasets.synthetic``; split at day 21 of 28, the
last 7 days evaluated) and the Complete Journey (``--dataset completejourney``: the quick
start's config plus ``rebuy``, "will the household buy this product again within 14 days", the
task the ranking uses; split at 2017-12-01, each household's purchases in the next 14 days
evaluated, on a seeded sample of ``--users`` households). ``--validate`` moves the split one
period earlier (day 14 of the shop, 2017-11-17 for the Complete Journey) and evaluates the
period up to the test split: the held-out split the blend's factors were chosen on.

    python benchmarks/recommend.py --seed 0        # synthetic shop, test split
    python benchmarks/recommend.py --seed 1 --validate
    python benchmarks/recommend.py --dataset completejourney --users 600
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

import liveprofile
from liveprofile.config import LabelConfig, LearnerConfig, PipelineConfig, TaskConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate, ground_truth
from liveprofile.events.sources import JsonlSource
from liveprofile.profile.items import decode_item
from liveprofile.profile.popular import popularity_key
from liveprofile.serving.recommend import Recommender
from liveprofile.store import SQLiteStore

K = 10
DAY = 86400.0
Lists = dict[str, dict[str, list[str]]]


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


ABLATIONS: dict[str, Callable[[dict[str, float]], float]] = {
    "blend without popularity": lambda f: f["model"] + f["interest"] + f["history"],
    "blend without interest": lambda f: f["model"] + f["popularity"] + f["history"],
    "blend without history": lambda f: f["model"] + f["popularity"] + f["interest"],
    "blend without the model": lambda f: f["popularity"] + f["interest"] + f["history"],
}


def evaluate(
    store_path: Path, bought: dict[str, set[str]], users: list[str] | None, seed: int
) -> tuple[Lists, list[str], float]:
    """Every system's top 10 for each evaluated user; the users; ms per served answer."""
    store = SQLiteStore(store_path)
    rec = Recommender(store)
    h = rec.core.updater.h_counters
    popularity = {k: popularity_key(decode_item(b), h) for k, b in store.scan("item")}
    catalogue = sorted(popularity)
    known = {key for key, _ in store.scan("profile")}
    if users is None:
        users = sorted(u for u in bought if u in known)
    rng = np.random.default_rng(seed)
    overall = sorted(catalogue, key=lambda i: (-popularity[i], i))[:K]
    lists: Lists = defaultdict(dict)
    seconds = 0.0
    for user in users:
        t0 = time.perf_counter()
        served = rec.recommend(user, k=K)
        seconds += time.perf_counter() - t0
        lists["liveprofile (as served: blend)"][user] = [r["item"] for r in served["items"]]
        every = rec.recommend(user, k=1000)["items"]
        for name, key in ABLATIONS.items():
            ranked = sorted(every, key=lambda r: (-key(r["ranking"]), r["item"]))
            lists[name][user] = [r["item"] for r in ranked[:K]]
        by_model = sorted(every, key=lambda r: (-r["score"], r["item"]))
        lists["model alone, same candidates"][user] = [r["item"] for r in by_model[:K]]
        before = rec.recommend(user, k=1000, rank="model", overall=0)["items"]
        lists["before: model alone, interest candidates"][user] = [r["item"] for r in before[:K]]
        pool = sorted((r["item"] for r in before), key=lambda item: (-popularity[item], item))
        lists["the same interest candidates by popularity"][user] = pool[:K]
        lists["popular overall"][user] = overall
        lists["random"][user] = list(rng.choice(catalogue, size=K, replace=False))
    store.close()
    return lists, users, seconds / max(len(users), 1) * 1000


def synthetic(args: argparse.Namespace) -> None:
    config = SyntheticConfig(
        users=args.users or 500,
        items=args.items,
        categories=args.categories,
        days=args.days,
        seed=args.seed,
    )
    split_day = args.split_day - (7.0 if args.validate else 0.0)
    split, end = config.start_ts + split_day * DAY, config.start_ts + (split_day + 7.0) * DAY
    events = list(generate(config))
    train = [e for e in events if float(e["ts"]) < split]  # type: ignore[arg-type]
    bought: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if split <= float(e["ts"]) < end and e["type"] == "purchase":  # type: ignore[arg-type]
            bought[str(e["user_id"])].add(str(e["item_id"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in train))
        summary = liveprofile.replay(JsonlSource(path), store=Path(tmp) / "shop.db", progress=False)
        lists, users, ms = evaluate(Path(tmp) / "shop.db", bought, None, args.seed)
    lists["planted truth (upper bound)"] = planted(config, users, split)
    print(
        f"synthetic shop: {config.users} users, {config.items} items, {config.categories} "
        f"categories, {config.days} days, seed {config.seed}; replayed {summary['events']:,} "
        f"events before day {split_day:g}, evaluated days {split_day:g}-{split_day + 7:g} "
        f"({'validation' if args.validate else 'test'} split; convert AUC "
        f"{summary['tasks']['convert']['auc']:.4f})"
    )
    report(lists, users, bought, ms)


def completejourney_config() -> PipelineConfig:
    """The quick start's config with ``rebuy`` first: the item task the ranking uses."""
    from liveprofile.datasets.completejourney import quickstart_config

    base = quickstart_config()
    rebuy = TaskConfig(
        name="rebuy",
        on=["purchase"],
        label=LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="14d"),
        learner=LearnerConfig(kind="ftrl", params={"alpha": 0.1}),
    )
    return msgspec.structs.replace(base, tasks=[rebuy, *base.tasks])


def completejourney(args: argparse.Namespace) -> None:
    import pandas as pd

    from liveprofile.datasets.completejourney import CompleteJourneySource, data_dir

    tx = pd.read_parquet(
        data_dir() / "transactions.parquet",
        columns=["household_id", "product_id", "transaction_timestamp"],
    ).sort_values("transaction_timestamp", kind="stable")
    ts = tx["transaction_timestamp"].to_numpy("datetime64[ns]").astype(np.int64) / 1e9
    day = "2017-11-17" if args.validate else "2017-12-01"
    split = pd.Timestamp(day).value / 1e9
    rows = int(np.searchsorted(ts, split))
    period = (ts >= split) & (ts < split + 14 * DAY)
    bought: dict[str, set[str]] = defaultdict(set)
    households = tx["household_id"].to_numpy()[period].astype(str)
    products = tx["product_id"].to_numpy()[period].astype(str)
    for household, product in zip(households, products, strict=True):
        bought[household].add(product)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "cj.db"
        t0 = time.perf_counter()
        source = CompleteJourneySource(limit=rows)
        summary = liveprofile.replay(
            source, store=db, config=completejourney_config(), progress=False
        )
        replay_s = time.perf_counter() - t0
        reader = SQLiteStore(db)
        known = {key for key, _ in reader.scan("profile")}
        reader.close()
        pool = sorted(u for u in bought if u in known)
        n = min(args.users or 600, len(pool))
        users = sorted(np.random.default_rng(args.seed).choice(pool, size=n, replace=False))
        lists, users, ms = evaluate(db, bought, [str(u) for u in users], args.seed)
    tasks = summary["tasks"]
    print(
        f"Complete Journey: replayed {summary['events']:,} purchases before {day} in "
        f"{replay_s:.0f} s (rebuy AUC {tasks['rebuy']['auc']:.4f}, repurchase AUC "
        f"{tasks['repurchase']['auc']:.4f}); evaluated the next 14 days of {len(users)} of the "
        f"{len(pool)} households who buy in them (seed {args.seed}; "
        f"{'validation' if args.validate else 'test'} split)"
    )
    report(lists, users, bought, ms)


def report(lists: Lists, users: list[str], bought: dict[str, set[str]], ms: float) -> None:
    distinct = sum(len(bought[u]) for u in users) / len(users)
    print(f"{len(users)} users evaluated, {distinct:.1f} distinct items bought each on average")
    print(f"\n| system | hit rate@{K} | NDCG@{K} |\n|---|---:|---:|")
    for name, per_user in lists.items():
        hits = np.mean([bool(set(per_user[u][:K]) & bought[u]) for u in users])
        gain = np.mean([ndcg(per_user[u], bought[u]) for u in users])
        print(f"| {name} | {hits:.3f} | {gain:.3f} |")
    print(f"\nliveprofile: {ms:.1f} ms per recommendation as served (SQLite, one core)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["synthetic", "completejourney"], default="synthetic")
    parser.add_argument("--users", type=int, default=None, help="shop users / CJ households")
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--categories", type=int, default=12)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--split-day", type=float, default=21.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--validate", action="store_true", help="the held-out split instead")
    args: Any = parser.parse_args()
    (completejourney if args.dataset == "completejourney" else synthetic)(args)


if __name__ == "__main__":
    main()

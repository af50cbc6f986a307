"""Recommendation quality against what users bought later: liveprofile vs popularity and random.

Events before a split are replayed into a SQLite store; then, for every user who buys anything
in the period after the split, each system proposes 10 items and we count how many users bought
at least one of them in that period (hit rate@10) and how high the bought items rank (NDCG@10,
binary relevance).

Before the split the store's ranker (:mod:`liveprofile.serving.learned`) learns in rounds, one
period apart: replay up to the round's time, rank every buying user's candidates, learn from
what they bought in the following period (:func:`liveprofile.serving.ranklearn.learn_round`),
replay on. Each round prints its prequential hit rate and NDCG (measured before it learns) and
the weights after it. Nothing after the split is seen by any round. Systems, in one run on the
same users:

- the learned ranker as served: ``Recommender.recommend(user, k=10)`` (``rank="learned"``, the
  default): the user's newest items, the popular items of their top interest categories and the
  most popular items overall, ordered by the weights the rounds learned;
- the blend as served before (``rank="blend"``, without the user's newest items): the task's
  P(y=1) x popularity x interest x the user's history of the item
  (:mod:`liveprofile.serving.ranking`);
- the blend and the model alone (``rank="model"``) over the new candidates;
- the new candidates in popularity order (on these data the same as popular overall, whose 200
  items are among them);
- the interest candidates in popularity order, no model;
- popular overall: the 10 items with the highest decayed popularity, the same for everyone;
- random: 10 items drawn uniformly (seeded);
- planted truth (synthetic shop only): items by P(view) x P(purchase | view) from the
  generator's own parameters at the split, an upper bound no learner can beat on average.

Datasets: the synthetic shop (``liveprofile.datasets.synthetic``; split at day 21 of 28, the
last 7 days evaluated, ranker rounds at days 7 and 14) and the Complete Journey (``--dataset
completejourney``: the quick start's config plus ``rebuy``, "will the household buy this
product again within 14 days", the task the ranking uses; split at 2017-12-01, each household's
purchases in the next 14 days evaluated, on a seeded sample of ``--users`` households; ranker
rounds at 2017-11-03 and 2017-11-17 on ``--train-users`` households each). ``--validate`` moves
the split one period earlier and evaluates the period up to the test split.

    python benchmarks/recommend.py --seed 0        # synthetic shop, test split
    python benchmarks/recommend.py --seed 1 --validate
    python benchmarks/recommend.py --dataset completejourney --users 600

Prints each ranker round's prequential figures and weights, then a Markdown table of hit
rate@10 and NDCG@10 per system and the milliseconds per served recommendation; nothing is
written.
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
from liveprofile.serving.ranklearn import learn_round, ndcg, next_purchases
from liveprofile.serving.recommend import Recommender
from liveprofile.store import SQLiteStore

K = 10
DAY = 86400.0
Lists = dict[str, dict[str, list[str]]]


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


def served(rec: Recommender, user: str, **kw: Any) -> list[str]:
    return [r["item"] for r in rec.recommend(user, **kw)["items"]]


def by(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> list[str]:
    return [r["item"] for r in sorted(rows, key=lambda r: (-key(r), r["item"]))[:K]]


def blend_key(r: dict[str, Any]) -> float:
    f = r["features"]
    return float(f["model"] + f["popularity"] + f["interest"] + f["history"])


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
        lists[LEARNED][user] = served(rec, user, k=K)
        seconds += time.perf_counter() - t0
        every = rec.recommend(user, k=1000, top=0)["items"]
        lists[BLEND][user] = served(rec, user, k=K, rank="blend", recent=False)
        lists["blend over the new candidates (recent items added)"][user] = by(every, blend_key)
        lists["model alone over the new candidates (`rank=model`)"][user] = by(
            every, lambda r: r["score"]
        )
        lists["the new candidates in popularity order"][user] = by(
            every, lambda r: popularity.get(r["item"], -math.inf)
        )
        interest = served(rec, user, k=1000, rank="model", overall=0, recent=False)
        pool = sorted(interest, key=lambda item: (-popularity[item], item))
        lists["the interest candidates in popularity order"][user] = pool[:K]
        lists["popular overall"][user] = overall
        lists["random"][user] = list(rng.choice(catalogue, size=K, replace=False))
    store.close()
    return lists, users, seconds / max(len(users), 1) * 1000


LEARNED = "**learned ranker, as served (new default)**"
BLEND = "blend, as served before (interest + overall candidates)"


def learn_rounds(
    db: Path,
    rounds: list[tuple[float, dict[str, set[str]]]],
    replay_to: Callable[[float], None],
    users: Callable[[dict[str, set[str]]], list[str] | None],
) -> None:
    """Replay up to each round's time, then learn from the purchases that followed it."""
    for t, bought in rounds:
        replay_to(t)
        store = SQLiteStore(db)
        out = learn_round(Recommender(store), bought, users(bought))
        store.close()
        print(
            f"ranker round at {time.strftime('%Y-%m-%d', time.gmtime(t))}: {out['users']} users, "
            f"{out['pairs']:,} pairs; prequential hit rate@{K} {out['hit_rate']:.3f}, NDCG@{K} "
            f"{out['ndcg']:.3f} before learning; weights {out['weights']}"
        )


def synthetic(args: argparse.Namespace) -> None:
    config = SyntheticConfig(
        users=args.users or 500,
        items=args.items,
        categories=args.categories,
        days=args.days,
        seed=args.seed,
    )
    split_day = args.split_day - (7.0 if args.validate else 0.0)
    day = lambda d: config.start_ts + d * DAY  # noqa: E731
    split, end = day(split_day), day(split_day + 7.0)
    events = list(generate(config))
    bought = next_purchases(events, split, end)
    # rounds every 7 days before the split, from day 7 on (a week of history first)
    starts = [split_day - 7.0 * r for r in range(args.rounds, 0, -1) if split_day - 7.0 * r >= 7]
    rounds = [(day(d), next_purchases(events, day(d), day(d + 7.0))) for d in starts]
    summaries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path, db = Path(tmp) / "train.jsonl", Path(tmp) / "shop.db"

        def replay_to(t: float) -> None:  # the same file, grown: the replay resumes
            train = [e for e in events if float(e["ts"]) < t]  # type: ignore[arg-type]
            path.write_text("".join(json.dumps(e) + "\n" for e in train))
            summaries.append(liveprofile.replay(JsonlSource(path), store=db, progress=False))

        learn_rounds(db, rounds, replay_to, lambda b: None)
        replay_to(split)
        lists, users, ms = evaluate(db, bought, None, args.seed)
    lists["planted truth (upper bound)"] = planted(config, users, split)
    print(
        f"synthetic shop: {config.users} users, {config.items} items, {config.categories} "
        f"categories, {config.days} days, seed {config.seed}; replayed "
        f"{sum(s['events'] for s in summaries):,} events before day {split_day:g}, evaluated "
        f"days {split_day:g}-{split_day + 7:g} ({'validation' if args.validate else 'test'} "
        f"split; convert AUC {summaries[-1]['tasks']['convert']['auc']:.4f}); ranker rounds "
        f"at days {', '.join(f'{d:g}' for d in starts) or 'none'}"
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
    households = tx["household_id"].to_numpy().astype(str)
    products = tx["product_id"].to_numpy().astype(str)
    day = "2017-11-17" if args.validate else "2017-12-01"
    split = pd.Timestamp(day).value / 1e9
    period = 14 * DAY

    def purchases(start: float) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        lo, hi = np.searchsorted(ts, [start, start + period])
        for household, product in zip(households[lo:hi], products[lo:hi], strict=True):
            out[household].add(product)
        return out

    bought = purchases(split)
    rounds = [
        (split - r * period, purchases(split - r * period)) for r in range(args.rounds, 0, -1)
    ]
    summaries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "cj.db"
        t0 = time.perf_counter()

        def replay_to(t: float) -> None:  # the source resumes from the store's offset
            source = CompleteJourneySource(limit=int(np.searchsorted(ts, t)))
            summaries.append(
                liveprofile.replay(
                    source, store=db, config=completejourney_config(), progress=False
                )
            )

        def sample(b: dict[str, set[str]]) -> list[str]:
            pool = sorted(b)
            n = min(args.train_users, len(pool))
            return sorted(np.random.default_rng(args.seed + 1).choice(pool, size=n, replace=False))

        learn_rounds(db, rounds, replay_to, sample)
        replay_to(split)
        replay_s = time.perf_counter() - t0
        reader = SQLiteStore(db)
        known = {key for key, _ in reader.scan("profile")}
        reader.close()
        pool = sorted(u for u in bought if u in known)
        n = min(args.users or 600, len(pool))
        users = sorted(np.random.default_rng(args.seed).choice(pool, size=n, replace=False))
        lists, users, ms = evaluate(db, bought, [str(u) for u in users], args.seed)
    tasks = summaries[-1]["tasks"]
    print(
        f"Complete Journey: replayed {sum(s['events'] for s in summaries):,} purchases before "
        f"{day} in {replay_s:.0f} s with {len(rounds)} ranker rounds of {args.train_users} "
        f"households each (rebuy AUC {tasks['rebuy']['auc']:.4f}, repurchase AUC "
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        choices=["synthetic", "completejourney"],
        default="synthetic",
        help="the synthetic shop or the Complete Journey (default: %(default)s)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=None,
        help="synthetic shop users (default 500), or Complete Journey households "
        "evaluated, a seeded sample (default 600)",
    )
    parser.add_argument(
        "--items", type=int, default=400, help="items of the synthetic shop (default: %(default)s)"
    )
    parser.add_argument(
        "--categories",
        type=int,
        default=12,
        help="categories of the synthetic shop (default: %(default)s)",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=28,
        help="days of event time of the synthetic shop (default: %(default)s)",
    )
    parser.add_argument(
        "--split-day",
        type=float,
        default=21.0,
        help="day of the synthetic shop's test split; the 7 days after it are evaluated "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic shop, of the household samples and of the random system "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--validate",
        action="store_true",
        help="evaluate the validation split: one period (7 days; 14 on the Complete "
        "Journey) before the test split",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="ranker rounds, one period apart, before the split; on the synthetic shop only "
        "those from day 7 on (default: %(default)s)",
    )
    parser.add_argument(
        "--train-users",
        type=int,
        default=400,
        help="Complete Journey households each ranker round learns from, a seeded sample "
        "(default: %(default)s)",
    )
    args: Any = parser.parse_args()
    (completejourney if args.dataset == "completejourney" else synthetic)(args)


if __name__ == "__main__":
    main()

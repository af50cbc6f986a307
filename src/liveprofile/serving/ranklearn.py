"""Teaching the learned ranking what users bought next, one round at a time.

A round takes a store as it is at some time t and, for each user, the items they bought after
t (up to the next round). User by user, the candidates are ranked with the ranker as it is;
that ranking is scored against what they bought (hit rate and NDCG at k, *before* learning from
it, so the figures are prequential: test, then train), then the
:class:`~liveprofile.serving.learned.Ranker` learns from the same rows. Replay up to t, run a
round with the purchases of (t, t'], replay on to t', run the next round, and so on; what was
learned is saved in the store, where the recommender reads it.

>>> import tempfile, pathlib, json, liveprofile
>>> from liveprofile.datasets.synthetic import SyntheticConfig, generate
>>> from liveprofile.serving.recommend import Recommender
>>> from liveprofile.store import open_store
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> events = list(generate(SyntheticConfig(users=30, items=40, days=4, seed=1)))
>>> split = events[0]["ts"] + 3 * 86400
>>> (folder / "e.jsonl").write_text("".join(json.dumps(e) + "\\n" for e in events
...                                         if e["ts"] < split)) > 0
True
>>> _ = liveprofile.replay(folder / "e.jsonl", store=folder / "s.db", progress=False)
>>> bought = next_purchases(events, split, split + 86400)
>>> store = open_store(str(folder / "s.db"))
>>> rec = Recommender(store)
>>> out = learn_round(rec, bought)
>>> out["users"] > 0 and out["pairs"] > 0
True
>>> load_ranker(store, "convert").state.users == out["users"]
True
>>> store.close()
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from liveprofile.errors import LiveprofileError
from liveprofile.serving import MAX_CANDIDATES
from liveprofile.serving.learned import F64, FEATURES, Ranker, load_ranker, save_ranker
from liveprofile.serving.recommend import Recommender
from liveprofile.store.layout import PROFILES

K = 10


def ndcg(ranked: list[str], truth: set[str], k: int = K) -> float:
    """NDCG@k with binary relevance.

    >>> round(ndcg(["a", "b", "c"], {"b"}), 6)
    0.63093
    """
    dcg = sum(1 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in truth)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(truth))))
    return dcg / ideal if ideal else 0.0


def next_purchases(
    events: Iterable[Mapping[str, Any]],
    start: float,
    end: float,
    kinds: tuple[str, ...] = ("purchase",),
) -> dict[str, set[str]]:
    """The items each user bought in ``[start, end)`` (events as dicts, as JSON lines are).

    >>> next_purchases([{"type": "purchase", "user_id": "u", "item_id": "i", "ts": 5}], 0, 9)
    {'u': {'i'}}
    """
    out: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.get("type") in kinds and start <= float(e["ts"]) < end and e.get("item_id"):
            out[str(e["user_id"])].add(str(e["item_id"]))
    return dict(out)


#: user -> (their candidates as served, one row of features per candidate)
Rows = dict[str, tuple[list[str], F64]]


def candidate_rows(
    rec: Recommender,
    users: Iterable[str],
    task: str,
    on_user: Callable[[], None] | None = None,
) -> Rows:
    """Each user's candidates and their :data:`~liveprofile.serving.learned.FEATURES` as the
    store has them now, in the order the recommender serves them (users without a profile or
    candidates are left out); ``on_user`` is called after each user (progress)."""
    order = sorted(set(users))
    blobs = rec.store.read(PROFILES, order)
    out: Rows = {}
    for user, blob in zip(order, blobs, strict=True):
        if blob:
            served = rec.recommend(user, k=MAX_CANDIDATES, task=task, top=0, rank="learned")
            items = [r["item"] for r in served["items"]]
            if items:
                rows = [[r["features"][f] for f in FEATURES] for r in served["items"]]
                out[user] = (items, np.asarray(rows, dtype=np.float64))
        if on_user is not None:
            on_user()
    return out


def learn_rows(ranker: Ranker, rows: Rows, bought: Mapping[str, set[str]]) -> dict[str, Any]:
    """Score, then learn from, the candidates of each user in ``rows`` who bought something
    (in user id order): the prequential hit rate and NDCG at 10, users and pairs learned from.
    """
    hits, gains, pairs, n = 0.0, 0.0, 0, 0
    for user in sorted(rows.keys() & bought.keys()):
        items, features = rows[user]
        scores = ranker.score(features).tolist()  # ordered as served: ties by item id
        ranked = [items[j] for j in sorted(range(len(items)), key=lambda j: (-scores[j], items[j]))]
        ranked = ranked[:K]
        truth = bought[user]
        hits += bool(set(ranked) & truth)
        gains += ndcg(ranked, truth)
        n += 1
        pairs += ranker.learn(features, np.array([item in truth for item in items]))
    return {
        "users": n,
        "pairs": pairs,
        "hit_rate": hits / n if n else 0.0,
        "ndcg": gains / n if n else 0.0,
        "weights": ranker.weights,
    }


def learn_round(
    rec: Recommender,
    bought: Mapping[str, set[str]],
    users: Iterable[str] | None = None,
    task: str | None = None,
    ranker: Ranker | None = None,
    save: bool = True,
    on_user: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """One round: for each of ``users`` (default: every user in ``bought`` with a profile, in
    id order) rank their candidates with ``ranker`` (default: the one in the store), score
    that against ``bought``, then learn from it. Saves the ranker in the store unless
    ``save`` is false. Returns the prequential hit rate and NDCG at 10, the users and the
    pairs learned from, and the weights after the round."""
    store = rec.store
    ckpt = rec.checkpoint()
    spec = rec.default_task(ckpt.seq).name if task is None else task
    ranker = ranker or load_ranker(store, spec)
    known = set(bought) if users is None else set(users) & set(bought)
    out = learn_rows(ranker, candidate_rows(rec, known, spec, on_user), bought)
    if out["users"] == 0:
        raise RoundError("no user in the round has both a profile and a purchase to learn from")
    if save:
        save_ranker(store, spec, ranker)
    return {"task": spec, **out}


class RoundError(LiveprofileError):
    """A round of ranker learning had nothing to learn from."""

    exit_code = 65  # EX_DATAERR
    http_status = 422

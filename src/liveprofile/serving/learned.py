"""A learned ranking: how much the task's model, popularity, the user's interest and the user's
own history each count, learned online from what users bought next.

The blend (:mod:`liveprofile.serving.ranking`) adds the logs of four factors with weight one.
:class:`Ranker` scores a candidate by a weighted sum of those four and a few more
(:data:`FEATURES`), starting from the blend's weights, and learns the weights from rounds of
"what the user bought next": the candidates' features at one time and the items the user then
bought. Each round is a pairwise update (a bought item should outscore one not bought; the
logistic loss of their difference, as RankNet and BPR do) with AdaGrad steps and a pull back
toward the blend's weights, so a ranker that has seen nothing ranks as the blend does. It ranks
with the running average of the weights over every user it learned from (Polyak averaging),
which a single round of unusual purchases moves less than the latest weights.

Its state (weights, squared-gradient sums, counts) is a versioned blob kept in the store under
:func:`ranker_meta`; :meth:`~liveprofile.serving.recommend.Recommender.recommend` ranks with it
(``rank="learned"``, the default), so what was learned is what is served.

>>> ranker = Ranker()
>>> rows = np.zeros((3, len(FEATURES)))
>>> rows[:, FEATURES.index("popularity")] = [3.0, 1.0, 0.0]  # the first is the most popular
>>> rows[:, FEATURES.index("history")] = [0.0, 0.0, 2.0]  # the user keeps buying the third
>>> [int(j) for j in np.argsort(-ranker.score(rows))]
[0, 2, 1]
>>> for _ in range(30):
...     _ = ranker.learn(rows, np.array([False, False, True]))
>>> [int(j) for j in np.argsort(-ranker.score(rows))]
[2, 0, 1]
>>> Ranker.from_bytes(ranker.to_bytes()).state == ranker.state
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.errors import StateVersionError
from liveprofile.profile.items import ItemStats, shrunk_rate
from liveprofile.profile.state import KEY_EXAMPLES, KEY_SHIFT, Profile, key_outcome_name
from liveprofile.serving import ranking
from liveprofile.store.base import Store
from liveprofile.store.layout import ranker_meta

F64 = npt.NDArray[np.float64]
DAY = 86400.0

#: what a candidate is scored on, each a number per (user, item) at the time of the request:
#: the blend's four factors' logs, then the item's all-time event count (log1p), the user's own
#: conversions after examples of the task on the item (log1p), whether the item is among the
#: user's newest events (0/1), the item's conversion rate over all users (log, shrunk), and
#: the days since anyone last touched the item (log1p, at most a year)
FEATURES = (
    "model",
    "popularity",
    "interest",
    "history",
    "total",
    "converted",
    "recent",
    "item_rate",
    "idle_days",
)
#: the starting weights: the blend (each of its factors with weight one, the rest zero)
BLEND = tuple(1.0 if f in ("model", "popularity", "interest", "history") else 0.0 for f in FEATURES)
RANKER_SCHEMA = 1
#: the item conversion rate's prior and strength (pseudo-examples)
RATE_PRIOR, RATE_STRENGTH = 0.05, 5.0


class RankerState(msgspec.Struct, array_like=True):
    """Everything a :class:`Ranker` has learned, as stored."""

    features: list[str]
    weights: list[float]
    #: AdaGrad's sums of squared gradients, one per feature
    g2: list[float]
    #: the average of ``weights`` after each user learned from: what ranks (empty: the blend's)
    average: list[float] = []
    #: step size, pull toward the blend's weights, negatives drawn per bought item, seed
    rate: float = 0.05
    prior: float = 0.01
    negatives: int = 20
    seed: int = 0
    #: users learned from (rounds of one user each) and pairs compared
    users: int = 0
    pairs: int = 0


class Ranker:
    """Weights over :data:`FEATURES`, learned pairwise from what users bought next.

    Deterministic: the negatives drawn for a user depend only on ``seed`` and how many users
    the ranker has learned from, so the same rounds in the same order give the same weights,
    also across a store round trip.
    """

    def __init__(self, state: RankerState | None = None) -> None:
        if state is None:
            d = len(FEATURES)
            state = RankerState(list(FEATURES), list(BLEND), [0.0] * d)
        if tuple(state.features) != FEATURES:
            raise StateVersionError(
                f"stored ranker has features {state.features}, this version uses "
                f"{list(FEATURES)}: learn it again (benchmarks/recommend.py shows how)"
            )
        self.state = state
        self._w = np.asarray(state.weights, dtype=np.float64)
        self._g2 = np.asarray(state.g2, dtype=np.float64)
        self._prior = np.asarray(BLEND, dtype=np.float64)
        self._avg = np.asarray(state.average or BLEND, dtype=np.float64)

    @property
    def weights(self) -> dict[str, float]:
        """The weight each feature ranks with (the average over the users learned from)."""
        return {f: round(float(w), 6) for f, w in zip(FEATURES, self._avg, strict=True)}

    def score(self, rows: F64) -> F64:
        """Each candidate's ranking score (a row of :data:`FEATURES` per candidate), rounded
        to 9 places so that equal rows tie wherever they stand in ``rows``."""
        return np.asarray(np.round(rows @ self._avg, 9), dtype=np.float64)

    def contributions(self, row: Sequence[float]) -> dict[str, float]:
        """Each feature's weight x value for one candidate (they add up to its score)."""
        return {
            f: round(float(w) * float(v), 6)
            for f, w, v in zip(FEATURES, self._avg, row, strict=True)
        }

    def learn(self, rows: F64, bought: npt.NDArray[np.bool_]) -> int:
        """One user's round: ``rows`` are their candidates' features at one time, ``bought``
        which of them they bought next. Returns the pairs compared (0 when nothing or
        everything was bought: no order to learn)."""
        s = self.state
        pos, neg = np.flatnonzero(bought), np.flatnonzero(~bought)
        s.users += 1
        if len(pos) == 0 or len(neg) == 0:
            self._average()
            return 0
        rng = np.random.default_rng([s.seed, s.users])
        m = min(s.negatives, len(neg))
        drawn = np.stack([rng.choice(neg, size=m, replace=False) for _ in pos])
        diff = rows[pos][:, None, :] - rows[drawn]  # (positives, m, features)
        diff = diff.reshape(-1, rows.shape[1])
        margin = diff @ self._w
        # gradient of mean(log(1 + exp(-margin))) over the pairs
        weight = 1.0 / (1.0 + np.exp(np.clip(margin, -30.0, 30.0)))
        grad = -(weight[:, None] * diff).mean(axis=0) + s.prior * (self._w - self._prior)
        self._g2 += grad * grad
        self._w -= s.rate * grad / (np.sqrt(self._g2) + 1e-8)
        s.pairs += len(diff)
        s.weights = self._w.tolist()
        s.g2 = self._g2.tolist()
        self._average()
        return len(diff)

    def _average(self) -> None:
        self._avg += (self._w - self._avg) / self.state.users
        self.state.average = self._avg.tolist()

    def to_bytes(self) -> bytes:
        return bytes([RANKER_SCHEMA]) + msgspec.msgpack.encode(self.state)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Ranker:
        if blob[:1] != bytes([RANKER_SCHEMA]):
            raise StateVersionError(
                f"stored ranker has schema {blob[:1]!r}, this version reads {RANKER_SCHEMA}: "
                "learn it again"
            )
        return cls(msgspec.msgpack.decode(blob[1:], type=RankerState))


__all__ = ["FEATURES", "Ranker", "RankerState", "load_ranker", "ranker_meta", "save_ranker"]


def load_ranker(store: Store, task: str) -> Ranker:
    """The ranker stored for ``task``, or a new one (the blend's weights) if none is."""
    blob = store.get_meta(ranker_meta(task))
    return Ranker() if blob is None else Ranker.from_bytes(blob)


def save_ranker(store: Store, task: str, ranker: Ranker) -> None:
    """Keep ``ranker`` in the store (one meta blob; the rows and checkpoint are untouched)."""
    store.commit({}, {ranker_meta(task): ranker.to_bytes()})


def recent_items(p: Profile) -> list[str]:
    """The items of the user's newest events (kept in the profile), newest first."""
    out: dict[str, None] = {}
    for entry in reversed(p.recent):
        if entry[2] is not None:
            out.setdefault(entry[2])
    return list(out)


def feature_row(
    p: Profile,
    task: str,
    item: str,
    stats: ItemStats | None,
    score: float,
    ts: float,
    half_life: float,
    recent: frozenset[str] = frozenset(),
) -> list[float]:
    """One candidate's :data:`FEATURES`: ``score`` is the task model's P(y=1) for it, ``ts``
    the time it is ranked at, ``half_life`` the counters' (for the decayed popularity).

    >>> from liveprofile.profile.state import Profile
    >>> p = Profile(user="u1", anchor=0.0, first_ts=0.0, last_ts=0.0, interests={"c1": 1.0})
    >>> stats = ItemStats(anchor=0.0, last_ts=0.0, n=3, popularity=3.0, category="c1")
    >>> dict(zip(FEATURES, feature_row(p, "buy", "i1", stats, 0.5, 86400.0, 86400.0)))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'model': -0.693147, 'popularity': 0.405465, 'interest': 0.0, 'history': 0.0,
     'total': 1.386294, 'converted': 0.0, 'recent': 0.0, 'item_rate': -2.995732,
     'idle_days': 0.693147}
    """
    category = None if stats is None else stats.category
    base = ranking.factors(
        score,
        ranking.popularity_now(stats, ts, half_life),
        ranking.interest_share(p, category),
        ranking.history(p, task, item),
    )
    packed = p.key_outcomes.get(key_outcome_name(task, item), 0)
    converted = packed >> KEY_SHIFT if packed & KEY_EXAMPLES else 0
    if stats is None:
        total, rate, idle = 0.0, RATE_PRIOR, 365.0
    else:
        total = float(stats.n)
        positives, examples = stats.positives.get(task, 0), stats.examples.get(task, 0)
        rate = shrunk_rate(positives, examples, RATE_PRIOR, RATE_STRENGTH)
        idle = min(max((ts - stats.last_ts) / DAY, 0.0), 365.0)
    return [
        base["model"],
        base["popularity"],
        base["interest"],
        base["history"],
        round(math.log1p(total), 6),
        round(math.log1p(converted), 6),
        1.0 if item in recent else 0.0,
        round(math.log(rate), 6),
        round(math.log1p(idle), 6),
    ]


def feature_rows(
    p: Profile,
    task: str,
    items: Sequence[str],
    stats: Sequence[ItemStats | None],
    scores: Sequence[float],
    ts: float,
    half_life: float,
) -> F64:
    """:func:`feature_row` of every candidate, one row each."""
    recent = frozenset(recent_items(p))
    rows = [
        feature_row(p, task, item, it, score, ts, half_life, recent)
        for item, it, score in zip(items, stats, scores, strict=True)
    ]
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))

"""Synthetic e-commerce events with known ground truth and a planted drift.

A simulated shop, so that tests and demos can check what a learner found against what was planted:

- **Users** have category preferences, a Dirichlet draw (``preference_concentration``).
- **Items** have one category, a price and a latent quality; within a category a view lands on an
  item with probability proportional to ``exp(0.7 * quality)`` (``item_popularity``).
- **Sessions** arrive as a Poisson process per user; each is ``1 + Poisson(views_per_session - 1)``
  views seconds to minutes apart. A view picks a category from the preferences in force at that
  moment, then an item; it becomes a cart (right after it) with probability
  ``sigmoid(cart_bias + cart_affinity * pref[category] + cart_quality * quality)``. At checkout,
  after the last view, each cart becomes a purchase with probability ``sigmoid(purchase_bias +
  purchase_affinity * pref[category] + purchase_quality * quality + purchase_price *
  log(price / median price))``, preferences taken at the cart.
- **Drift**: at ``drift_ts`` a random ``drift_fraction`` of the users draw new preferences.

Everything is a pure function of the config and its ``seed``. An ``event_id`` is ``<session>-<n>``
(``s000042-003``: the fourth event of session 42), so sessions can be regrouped.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.errors import ConfigError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DAY = 86_400.0
EVENT_TYPES = ("view", "cart", "purchase")
CATEGORY_NAMES = (
    "books",
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "toys",
    "grocery",
    "garden",
    "music",
    "games",
    "pets",
    "auto",
    "office",
    "health",
    "jewelry",
)
TAG_NAMES = ("new", "sale", "eco", "bestseller", "gift", "limited")
TAG_RATE = 0.15  # each item carries each tag with this probability
POPULARITY_QUALITY = 0.7  # within-category view share is proportional to exp(this * quality)
MALFORMED_KINDS = ("broken_json", "missing_user_id", "bad_ts", "bad_value")


@dataclass(frozen=True)
class SyntheticConfig:
    """Shape of the simulated shop; the defaults give about 50k events over 28 days.

    >>> SyntheticConfig(seed=-1)
    Traceback (most recent call last):
    ...
    liveprofile.errors.ConfigError: seed must be a non-negative integer, got -1
    """

    users: int = 500
    items: int = 400
    categories: int = 12
    days: int = 28
    start_ts: int = 1_704_067_200  # 2024-01-01T00:00:00Z
    sessions_per_user_per_day: float = 0.6
    views_per_session: float = 5.0  # mean; every session has at least one view
    preference_concentration: float = 0.3  # Dirichlet alpha of the user preferences
    drift_at: float = 0.5  # fraction of the time span
    drift_fraction: float = 0.5  # share of users whose preferences change at drift_ts
    cart_bias: float = -3.0
    cart_affinity: float = 3.0
    cart_quality: float = 0.5
    purchase_bias: float = -1.0
    purchase_affinity: float = 2.0
    purchase_quality: float = 0.5
    purchase_price: float = -0.8
    seed: int = 0

    def __post_init__(self) -> None:
        rules = (
            ("users", self.users >= 1, "at least 1"),
            ("categories", self.categories >= 1, "at least 1"),
            ("items", self.items >= self.categories, "at least `categories` (one item each)"),
            ("days", self.days >= 1, "at least 1"),
            ("sessions_per_user_per_day", self.sessions_per_user_per_day >= 0, "not negative"),
            ("views_per_session", self.views_per_session >= 1, "at least 1 (a session has a view)"),
            ("preference_concentration", self.preference_concentration > 0, "positive"),
            ("drift_at", 0 <= self.drift_at <= 1, "within [0, 1] (a fraction of the time span)"),
            ("drift_fraction", 0 <= self.drift_fraction <= 1, "within [0, 1] (a share of users)"),
            ("seed", self.seed >= 0, "a non-negative integer"),
        )
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    @property
    def end_ts(self) -> float:
        """End of the simulated time span (epoch seconds); no session starts after it."""
        return self.start_ts + self.days * DAY

    @property
    def drift_ts(self) -> float:
        """The moment the drifted users switch preferences (epoch seconds)."""
        return self.start_ts + self.drift_at * self.days * DAY


DEFAULT_CONFIG = SyntheticConfig()


def _streams(seed: int) -> list[np.random.Generator]:
    """Independent random streams: the world, the sessions, and file corruption."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]


def _sigmoid(x: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Everything that was planted, for checking what a learner recovers.

    Arrays are read-only and indexed like ``user_ids``, ``item_ids`` and ``categories``;
    ``preferences_after`` equals ``preferences_before`` for users who did not drift. The
    probabilities are exact: they are the very functions the generator draws from.

    >>> truth = ground_truth(SyntheticConfig(users=20, items=30, days=2, seed=3))
    >>> len(truth.drifted_users), truth.preferences_before.shape
    (10, (20, 12))
    >>> round(sum(truth.preferences("u00000", truth.drift_ts).values()), 6)
    1.0
    >>> 0.0 < truth.conversion_probability("u00000", "books", truth.drift_ts) < 1.0
    True
    """

    config: SyntheticConfig
    drift_ts: float
    categories: tuple[str, ...]
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    drifted_users: frozenset[str]
    preferences_before: FloatArray  # (users, categories), rows sum to 1
    preferences_after: FloatArray  # (users, categories), rows sum to 1
    item_category: IntArray  # (items,) index into categories
    item_price: FloatArray  # (items,)
    item_quality: FloatArray  # (items,) latent, standard normal
    item_popularity: FloatArray  # (items,) P(item | a view in its category)
    item_tags: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @cached_property
    def user_index(self) -> dict[str, int]:
        """Row of each user id in the preference arrays."""
        return {u: i for i, u in enumerate(self.user_ids)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        """Position of each item id in the item arrays."""
        return {item: i for i, item in enumerate(self.item_ids)}

    def preference_rows(self, users: IntArray, ts: FloatArray) -> FloatArray:
        """Preferences in force for each (user index, time): one row per pair."""
        after = (ts >= self.drift_ts)[:, None]
        return np.where(after, self.preferences_after[users], self.preferences_before[users])

    def cart_probabilities(self, users: IntArray, items: IntArray, ts: FloatArray) -> FloatArray:
        """P(cart | a view of ``items[j]`` by ``users[j]`` at ``ts[j]``), by index."""
        c = self.config
        pref = self.preference_rows(users, ts)[np.arange(len(users)), self.item_category[items]]
        quality = self.item_quality[items]
        return _sigmoid(c.cart_bias + c.cart_affinity * pref + c.cart_quality * quality)

    def purchase_probabilities(
        self, users: IntArray, items: IntArray, ts: FloatArray
    ) -> FloatArray:
        """P(purchase | a cart of ``items[j]`` by ``users[j]`` at ``ts[j]``), by index."""
        c = self.config
        pref = self.preference_rows(users, ts)[np.arange(len(users)), self.item_category[items]]
        price = np.log(self.item_price[items] / np.median(self.item_price))
        quality = self.item_quality[items]
        logit = c.purchase_bias + c.purchase_affinity * pref + c.purchase_quality * quality
        return _sigmoid(logit + c.purchase_price * price)

    def preferences(self, user_id: str, ts: float) -> dict[str, float]:
        """The user's category preferences (summing to 1) in force at ``ts``."""
        row = self.preference_rows(np.array([self.user_index[user_id]]), np.array([ts]))[0]
        return dict(zip(self.categories, row.tolist(), strict=True))

    def conversion_probability(self, user_id: str, category: str, ts: float) -> float:
        """P(purchase | a view in ``category`` at ``ts``), averaged over the item viewed.

        A cart and its purchase are minutes apart, so both are evaluated at ``ts``.
        """
        items = np.flatnonzero(self.item_category == self.categories.index(category))
        users = np.full(len(items), self.user_index[user_id])
        times = np.full(len(items), ts, dtype=np.float64)
        p = self.cart_probabilities(users, items, times)
        p *= self.purchase_probabilities(users, items, times)
        return float(np.sum(self.item_popularity[items] * p))


def ground_truth(config: SyntheticConfig = DEFAULT_CONFIG) -> GroundTruth:
    """The planted users, items, preferences and drift for ``config`` (see :class:`GroundTruth`)."""
    rng, _, _ = _streams(config.seed)
    n_users, n_items, k = config.users, config.items, config.categories
    alpha = np.full(k, config.preference_concentration)
    before = rng.dirichlet(alpha, size=n_users)
    n_drifted = round(config.drift_fraction * n_users)
    drifted = np.sort(rng.choice(n_users, size=n_drifted, replace=False))
    after = before.copy()
    after[drifted] = rng.dirichlet(alpha, size=n_drifted)

    category = rng.permutation(np.arange(n_items, dtype=np.int64) % k)
    base_price = np.exp(rng.normal(3.3, 0.7, size=k))
    spread = np.exp(rng.normal(0.0, 0.35, size=n_items))
    price = np.maximum(0.5, np.round(base_price[category] * spread, 2))
    quality = rng.normal(0.0, 1.0, size=n_items)
    weight = np.exp(POPULARITY_QUALITY * quality)
    popularity = weight / np.bincount(category, weights=weight, minlength=k)[category]
    has_tag = rng.random((n_items, len(TAG_NAMES))) < TAG_RATE

    user_ids = tuple(f"u{u:05d}" for u in range(n_users))
    return GroundTruth(
        config=config,
        drift_ts=config.drift_ts,
        categories=tuple(
            CATEGORY_NAMES[c] if c < len(CATEGORY_NAMES) else f"cat{c:02d}" for c in range(k)
        ),
        user_ids=user_ids,
        item_ids=tuple(f"i{i:05d}" for i in range(n_items)),
        drifted_users=frozenset(user_ids[u] for u in drifted.tolist()),
        preferences_before=before,
        preferences_after=after,
        item_category=category,
        item_price=price,
        item_quality=quality,
        item_popularity=popularity,
        item_tags=tuple(
            tuple(t for t, on in zip(TAG_NAMES, row, strict=True) if on) for row in has_tag.tolist()
        ),
    )


def _simulate(config: SyntheticConfig) -> tuple[GroundTruth, list[npt.NDArray[np.generic]]]:
    """Event columns (session, seq, ts, kind, user, item), sorted by (ts, session)."""
    truth = ground_truth(config)
    _, rng, _ = _streams(config.seed)
    n_sessions = rng.poisson(config.sessions_per_user_per_day * config.days, size=config.users)
    s_user = np.repeat(np.arange(config.users, dtype=np.int64), n_sessions)
    # Leave an hour at the end so that sessions finish within the time span.
    s_start = config.start_ts + rng.uniform(0.0, config.days * DAY - 3600.0, len(s_user))
    by_start = np.argsort(s_start, kind="stable")
    s_user, s_start = s_user[by_start], s_start[by_start]

    n_views = 1 + rng.poisson(config.views_per_session - 1.0, size=len(s_user))
    v_sess = np.repeat(np.arange(len(s_user), dtype=np.int64), n_views)
    v_user = s_user[v_sess]
    gap = 3.0 + rng.exponential(40.0, size=len(v_sess))  # from a view to the next step
    elapsed = np.cumsum(gap) - gap  # views are grouped by session
    v_ts = s_start[v_sess] + elapsed - elapsed[np.searchsorted(v_sess, v_sess, side="left")]
    cdf = np.cumsum(truth.preference_rows(v_user, v_ts), axis=1)
    v_cat = np.minimum((cdf <= rng.random(len(v_sess))[:, None]).sum(axis=1), cdf.shape[1] - 1)
    v_item = np.empty(len(v_sess), dtype=np.int64)
    for c in range(config.categories):
        rows, members = np.flatnonzero(v_cat == c), np.flatnonzero(truth.item_category == c)
        v_item[rows] = rng.choice(members, size=len(rows), p=truth.item_popularity[members])

    carted = rng.random(len(v_sess)) < truth.cart_probabilities(v_user, v_item, v_ts)
    c_sess, c_user, c_item = v_sess[carted], v_user[carted], v_item[carted]
    c_ts = v_ts[carted] + gap[carted] * rng.uniform(0.2, 0.8, size=len(c_sess))

    bought = rng.random(len(c_sess)) < truth.purchase_probabilities(c_user, c_item, c_ts)
    p_sess, p_user, p_item = c_sess[bought], c_user[bought], c_item[bought]
    s_end = np.zeros(len(s_user))
    np.maximum.at(s_end, v_sess, v_ts + gap)  # checkout, after the last view
    rank = np.arange(len(p_sess)) - np.searchsorted(p_sess, p_sess, side="left")
    p_ts = s_end[p_sess] + 5.0 * (rank + 1) + rng.uniform(0.0, 1.0, size=len(p_sess))

    ts = np.round(np.concatenate((v_ts, c_ts, p_ts)), 3)
    session = np.concatenate((v_sess, c_sess, p_sess))
    order = np.lexsort((session, ts))
    session = session[order]
    by_session = np.argsort(session, kind="stable")  # within a session: in time order
    seq = np.empty(len(session), dtype=np.int64)
    grouped = session[by_session]
    seq[by_session] = np.arange(len(session)) - np.searchsorted(grouped, grouped, side="left")
    kind = np.repeat(np.arange(3), (len(v_sess), len(c_sess), len(p_sess)))
    user, item = np.concatenate((v_user, c_user, p_user)), np.concatenate((v_item, c_item, p_item))
    return truth, [session, seq, ts[order], kind[order], user[order], item[order]]


def generate(config: SyntheticConfig = DEFAULT_CONFIG) -> Iterator[dict[str, object]]:
    """Yield the events for ``config`` in time order (same seed, same events).

    Events of one session come in funnel order: each cart follows its view, purchases come at
    checkout after the session's last view. ``value`` (the item's price) is set on carts and
    purchases; ``tags`` only when the item has any.

    >>> config = SyntheticConfig(users=20, items=30, days=3, seed=1)
    >>> events = list(generate(config))
    >>> len(events), events[0]
    (223, {'event_id': 's000000-000', 'user_id': 'u00017', 'type': 'view', 'ts': 1704067926.868, \
'item_id': 'i00015', 'category': 'toys', 'tags': ['bestseller']})
    >>> [e["type"] for e in events if e["event_id"].startswith("s000006-")]  # one session
    ['view', 'view', 'view', 'cart', 'view', 'cart', 'view', 'cart', 'view', 'purchase', 'purchase']
    >>> all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
    True
    """
    truth, columns = _simulate(config)
    prices: list[float] = truth.item_price.tolist()
    categories = [truth.categories[c] for c in truth.item_category.tolist()]
    for session, seq, ts, kind, user, item in zip(*(c.tolist() for c in columns), strict=True):
        event: dict[str, object] = {
            "event_id": f"s{session:06d}-{seq:03d}",
            "user_id": truth.user_ids[user],
            "type": EVENT_TYPES[kind],
            "ts": ts,
            "item_id": truth.item_ids[item],
            "category": categories[item],
        }
        if kind:
            event["value"] = prices[item]
        if truth.item_tags[item]:
            event["tags"] = list(truth.item_tags[item])
        yield event


@dataclass(frozen=True)
class WriteStats:
    """What :func:`write_jsonl` wrote: ``lines == valid + duplicates + invalid``."""

    valid: int  # distinct valid events (each event of the generated stream once)
    duplicates: int  # extra copies of valid events, identical to the first
    invalid: int  # malformed lines

    @property
    def lines(self) -> int:
        """Total lines in the file."""
        return self.valid + self.duplicates + self.invalid


def _malformed(template: dict[str, object], kind: str, number: int) -> bytes:
    record = {**template, "event_id": f"bad-{number:06d}"}
    if kind == "missing_user_id":
        del record["user_id"]
    elif kind == "bad_ts":
        record["ts"] = "not-a-time"
    elif kind == "bad_value":
        record["value"] = "n/a"
    encoded = msgspec.json.encode(record)
    # A truncated object is never valid JSON: its only '}' is the final one.
    return encoded[: len(encoded) // 2] if kind == "broken_json" else encoded


def write_jsonl(
    path: str | os.PathLike[str],
    config: SyntheticConfig = DEFAULT_CONFIG,
    *,
    invalid_rate: float = 0.0,
    duplicate_rate: float = 0.0,
) -> WriteStats:
    """Write the events of ``config`` as JSON Lines, optionally with bad input mixed in.

    Every generated event is written once, in order. ``round(invalid_rate * events)`` malformed
    lines follow random events, a mix of broken JSON, a missing ``user_id``, a ``ts``
    that is not a time and a ``value`` that is not a number (each with its own ``bad-*`` id).
    ``round(duplicate_rate * events)`` events are written a second time, identical, up to 1000
    events later. Positions are drawn from the seed, so the file is reproducible.
    """
    for name, rate in (("invalid_rate", invalid_rate), ("duplicate_rate", duplicate_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ConfigError(f"{name} must be within [0, 1] (a share of the events), got {rate}")
    events = list(generate(config))
    n = len(events)
    _, _, rng = _streams(config.seed)
    encoder = msgspec.json.Encoder()
    extra: defaultdict[int, list[bytes]] = defaultdict(list)

    n_dup = round(duplicate_rate * n)
    originals = np.sort(rng.choice(n, size=n_dup, replace=False))
    later = np.minimum(n - 1, originals + rng.integers(0, 1000, size=n_dup))
    for original, position in zip(originals.tolist(), later.tolist(), strict=True):
        extra[position].append(encoder.encode(events[original]))

    n_bad = round(invalid_rate * n)
    for number, position in enumerate(rng.integers(0, max(n, 1), size=n_bad).tolist()):
        kind = MALFORMED_KINDS[number % len(MALFORMED_KINDS)]
        extra[position].append(_malformed(events[position], kind, number))

    with Path(path).open("wb") as out:
        for i, event in enumerate(events):
            out.writelines(line + b"\n" for line in [encoder.encode(event), *extra.get(i, [])])
    return WriteStats(valid=n, duplicates=n_dup, invalid=n_bad)

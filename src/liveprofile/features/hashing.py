"""Hashed features for one event, built from the event, the profile *before* it, and item stats.

Every feature has a name (``"user=42"``, ``"topic=Dairy"``, or ``"recency"`` for a numeric one),
hashed with CRC32 into a space of ``2 ** bits`` indices; crosses combine the hashes of their
parts. Indices are cached by name, so a repeated user, item or category costs a dictionary lookup.

>>> from liveprofile.config import FeatureConfig, ProfileConfig
>>> from liveprofile.events import Event
>>> from liveprofile.profile import ProfileUpdater
>>> builder = FeatureBuilder(FeatureConfig(bits=16), ProfileUpdater(ProfileConfig()))
>>> event = Event("e1", "u1", "view", 0.0, item_id="i1", category="c1")
>>> idx, val = builder.build(event, None, None)
>>> len(idx) == len(val), all(0 <= i < 2 ** 16 for i in idx)
(True, True)
>>> names = builder.explain(event, None, None)
>>> [name for name, _ in names[:6]]
['bias', 'user=u1', 'type=view', 'item=i1', 'topic=c1', 'user_x_topic=u1|c1']
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

from liveprofile.config import FeatureConfig
from liveprofile.durations import DAY
from liveprofile.events.schema import Event
from liveprofile.features.behaviour import add_features, table_names
from liveprofile.features.buckets import MIX, cross_index, day_parts, decile, log2_bucket, rounded
from liveprofile.profile.decay import decay_factor
from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import Profile, ProfileUpdater

__all__ = ["MIX", "SCALARS", "TABLES", "FeatureBuilder"]
_CACHE_LIMIT = 1_000_000
#: the scalar features, by name (the compiled path keeps their indices in this order)
SCALARS = (
    "bias",
    "user_new",
    "item_new",
    "recency",
    "affinity",
    "item_pop",
    "user_x_topic",
    "interest",
    "key_rate",
    "top_interest=0",
    "top_interest=1",
    "u_new_task",
    "u_rate",
    "i_new_task",
    "i_rate",
)
#: the bucketed features: name and number of buckets; values past the last bucket fall in it
TABLES = (
    ("interest_b", 17),
    ("key_rate_b", 10),
    ("key_seen_b", 13),
    ("hour", 24),
    ("weekday", 7),
    ("recency_b", 17),
    ("events_b", 17),
    ("monetary_b", 21),
    ("affinity_b", 10),
    ("item_pop_b", 17),
    ("user_value_b", 21),
    ("item_value_b", 21),
    ("u_rate_b", 10),
    ("u_seen_b", 13),
    ("i_rate_b", 10),
    ("i_seen_b", 13),
)


def _crc(text: str) -> int:
    """CRC32 of the text: stable across processes, unlike ``hash()``."""
    return zlib.crc32(text.encode())


class FeatureBuilder:
    """Builds ``(indices, values)`` for events; :meth:`explain` gives the readable names.

    The hot path never builds a string: bucketed features come from tables of precomputed
    indices, and categorical values from per-field caches. Every index is registered with the
    name it was hashed from, which is how :meth:`explain` reads a feature vector back.
    """

    #: prior and strength of the smoothed outcome rates (user and item target statistics)
    RATE_PRIOR = 0.5
    RATE_STRENGTH = 2.0

    def __init__(self, config: FeatureConfig, updater: ProfileUpdater) -> None:
        self.config = config
        self.mask = (1 << config.bits) - 1
        self._h_counters = updater.h_counters
        self._h_interests = updater.h_interests
        self._crosses = config.crosses
        self._time = config.time_of_day
        self.names: dict[int, str] = {}
        self._values: dict[str, dict[str, int]] = {}
        self._parts: dict[str, int] = {}
        idx = self.index
        #: the index of each scalar feature, by name
        self.scalars = {name: idx(name) for name in SCALARS}
        #: the indices of each bucketed feature's buckets, by name
        self.tables = {name: _table(idx, name, size) for name, size in TABLES}
        scalar, table = self.scalars, self.tables
        self._bias, self._user_new, self._item_new = (
            scalar["bias"],
            scalar["user_new"],
            scalar["item_new"],
        )
        self._recency, self._affinity, self._item_pop = (
            scalar["recency"],
            scalar["affinity"],
            scalar["item_pop"],
        )
        self._cross_salt = scalar["user_x_topic"]
        self._interest = scalar["interest"]
        self._interest_b = table["interest_b"]
        self._key_rate = scalar["key_rate"]
        self._key_rate_b = table["key_rate_b"]
        self._key_seen_b = table["key_seen_b"]
        self._top = [scalar["top_interest=0"], scalar["top_interest=1"]]
        self._hours = table["hour"]
        self._weekdays = table["weekday"]
        self._recency_b = table["recency_b"]
        self._events_b = table["events_b"]
        self._monetary_b = table["monetary_b"]
        self._affinity_b = table["affinity_b"]
        self._item_pop_b = table["item_pop_b"]
        self._value_b = {who: table[f"{who}_value_b"] for who in ("user", "item")}
        #: the behaviour feature tables (``features.behaviour``), in ``behaviour.table_names``
        #: order; empty when off
        on = config.behaviour and updater.behaviour.room > 0
        names = table_names(updater.behaviour.types, bool(updater.behaviour.value))
        self.behaviour_tables = [_table(idx, name, size) for name, size in names] if on else []
        self._behaviour_value = updater.behaviour.value
        self._task: dict[str, tuple[int, int, list[int], list[int]]] = {}
        for who in ("u", "i"):
            self._task[who] = (
                scalar[f"{who}_new_task"],
                scalar[f"{who}_rate"],
                table[f"{who}_rate_b"],
                table[f"{who}_seen_b"],
            )

    def value_index(self, field: str, value: str) -> int:
        """The index of a categorical feature ``field=value`` (cached)."""
        return self._value(field, value)

    def part(self, value: str) -> int:
        """The hash of one part of a cross (cached)."""
        return self._part(value)

    def index(self, name: str) -> int:
        """The index of a feature name such as ``"user=42"`` or ``"recency"``."""
        i = _crc(name) & self.mask
        self.names.setdefault(i, name)
        return i

    def _value(self, field: str, value: str) -> int:
        cache = self._values.get(field)
        if cache is None:
            cache = self._values[field] = {}
        i = cache.get(value)
        if i is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            i = cache[value] = self.index(f"{field}={value}")
        return i

    def _part(self, value: str) -> int:
        parts = self._parts
        h = parts.get(value)
        if h is None:
            if len(parts) >= _CACHE_LIMIT:
                parts.clear()
            h = parts[value] = _crc(value)
        return h

    def cross(self, user: str, topic: str) -> int:
        """The index of the user x topic cross, from the cached hashes of its parts."""
        return cross_index(self._part(user), self._part(topic), self._cross_salt, self.mask)

    def build(
        self, e: Event, p: Profile | None, item: ItemStats | None
    ) -> tuple[list[int], list[float]]:
        """Shared features of an event given the profile and item statistics before it."""
        ts = e.ts
        value = self._value
        idx = [self._bias, value("user", e.user), value("type", e.type)]
        val = [1.0, 1.0, 1.0]
        if e.item_id is not None:
            idx.append(value("item", e.item_id))
            val.append(1.0)
        topics = e.topics()
        if topics:
            weight = 1.0 / math.sqrt(len(topics))
            for topic in topics:
                idx.append(value("topic", topic))
                val.append(weight)
                if self._crosses:
                    idx.append(self.cross(e.user, topic))
                    val.append(weight)
        if self._time:
            hour, weekday = day_parts(ts)
            idx.append(self._hours[hour])
            idx.append(self._weekdays[weekday])
            val += (1.0, 1.0)
        if p is None:
            idx.append(self._user_new)
            val.append(1.0)
        else:
            self._profile_features(ts, p, topics, idx, val)
            if self.behaviour_tables:
                f_c = decay_factor(max(ts, p.last_ts), p.anchor, self._h_counters)
                add_features(
                    self.behaviour_tables, p, e.item_id, e.category, ts, f_c, idx, val,
                    _log2_bucket, self._behaviour_value,
                )  # fmt: skip
        if item is None:
            idx.append(self._item_new)
            val.append(1.0)
        else:
            # read decayed sums no earlier than their last update (events may come out of order)
            at = max(ts, item.last_ts)
            pop = item.popularity * decay_factor(at, item.anchor, self._h_counters)
            idx.append(self._item_pop)
            idx.append(_log2_bucket(self._item_pop_b, pop))
            val += (math.log1p(pop), 1.0)
            if item.value_n:
                idx.append(_bucket(self._value_b["item"], 2 * item.value_sum / item.value_n))
                val.append(1.0)
        return idx, val

    def _profile_features(
        self, ts: float, p: Profile, topics: tuple[str, ...], idx: list[int], val: list[float]
    ) -> None:
        recency = max(0.0, (ts - p.last_ts) / DAY)
        idx.append(self._recency)
        idx.append(_log2_bucket(self._recency_b, recency * 24))
        idx.append(_log2_bucket(self._events_b, p.n))
        val += (math.log1p(recency), 1.0, 1.0)
        at = max(ts, p.last_ts)
        f_c = decay_factor(at, p.anchor, self._h_counters)
        value = self._value
        for kind, stored in p.decayed.items():
            idx.append(value("decayed", kind))
            val.append(math.log1p(stored * f_c))
        if p.monetary:
            idx.append(_log2_bucket(self._monetary_b, p.monetary))
            val.append(1.0)
        if p.value_n:
            idx.append(_bucket(self._value_b["user"], 2 * p.value_sum / p.value_n))
            val.append(1.0)
        interests = p.interests
        if topics and interests:
            total = sum(interests.values())
            share = sum(interests.get(t, 0.0) for t in topics) / total if total > 0 else 0.0
            top = max(interests, key=interests.__getitem__)
            # the decayed weight itself: how much of this the user did lately, not only its share
            own = interests.get(topics[0], 0.0) * decay_factor(at, p.anchor, self._h_interests)
            idx.append(self._affinity)
            idx.append(_decile(self._affinity_b, share))
            idx.append(self._top[top in topics])
            idx.append(self._interest)
            idx.append(_log2_bucket(self._interest_b, own))
            val += (share, 1.0, 1.0, math.log1p(own), 1.0)

    def task_features(
        self, task: str, p: Profile | None, item: ItemStats | None, key: str | None = None
    ) -> tuple[list[int], list[float]]:
        """Features specific to one task: the user's and the item's past outcome rates, and for
        a delayed task the user's past outcomes on this key (e.g. this category)."""
        idx: list[int] = []
        val: list[float] = []
        prior, strength = self.RATE_PRIOR, self.RATE_STRENGTH
        if key is not None and p is not None:
            rate, n = p.key_outcome_rate(task, key, prior, strength)
            idx += (self._key_rate, _decile(self._key_rate_b, rate))
            idx.append(_log2_bucket(self._key_seen_b, n))
            val += (rate - prior, 1.0, 1.0)
        for who, stats in (("u", p), ("i", item)):
            new, rate_i, rate_b, seen_b = self._task[who]
            if stats is None:
                idx.append(new)
                val.append(1.0)
                continue
            n = stats.examples.get(task, 0)
            rate = stats.outcome_rate(task, prior, strength)
            idx += (rate_i, _decile(rate_b, rate), _log2_bucket(seen_b, n))
            val += (rate - prior, 1.0, 1.0)
        return idx, val

    def explain(
        self, e: Event, p: Profile | None, item: ItemStats | None, task: str | None = None
    ) -> list[tuple[str, float]]:
        """The features with readable names, in the order :meth:`build` emits them.

        Names come from the index each was hashed to; when two features collide, both show
        under the name registered first.
        """
        crosses = {self.cross(e.user, t): f"user_x_topic={e.user}|{t}" for t in e.topics()}
        idx, val = self.build(e, p, item)
        if task is not None:
            t_idx, t_val = self.task_features(task, p, item)
            idx, val = idx + t_idx, val + t_val
        return [
            (crosses.get(i) or self.names.get(i, f"#{i}"), v) for i, v in zip(idx, val, strict=True)
        ]


def _table(index: Callable[[str], int], field: str, size: int) -> list[int]:
    """Indices of ``field=0`` .. ``field=size-1``: a bucketed feature without string building."""
    return [index(f"{field}={k}") for k in range(size)]


def _log2_bucket(table: list[int], x: float) -> int:
    """The index of ``x``'s bucket in ``table`` by :func:`~.buckets.log2_bucket`."""
    return table[log2_bucket(x, len(table) - 1)]


def _decile(table: list[int], x: float) -> int:
    return table[decile(x, len(table) - 1)]


def _bucket(table: list[int], x: float) -> int:
    return table[rounded(x, len(table) - 1)]

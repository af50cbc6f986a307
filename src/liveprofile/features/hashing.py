"""Hashed features for one event, built from the event, the profile *before* it, and item stats.

Categorical features are hashed (CRC32 of the value, mixed with a per-field salt) into a space of
``2 ** bits`` indices; numeric features have one fixed index each. Hashes of values are cached,
so a repeated user, item or category costs a dictionary lookup.

>>> from liveprofile.config import FeatureConfig, ProfileConfig
>>> from liveprofile.events import Event
>>> from liveprofile.profile import ProfileUpdater
>>> builder = FeatureBuilder(FeatureConfig(bits=16), ProfileUpdater(ProfileConfig()))
>>> idx, val = builder.build(Event("e1", "u1", "view", 0.0, item_id="i1", category="c1"), None, None)
>>> len(idx) == len(val), all(0 <= i < 2 ** 16 for i in idx)
(True, True)
>>> names = builder.explain(Event("e1", "u1", "view", 0.0, item_id="i1", category="c1"), None, None)
>>> names[:3]
[('bias', 1.0), ('user=u1', 1.0), ('type=view', 1.0)]
"""

from __future__ import annotations

import math
import zlib
from datetime import UTC, datetime

from liveprofile.config import FeatureConfig
from liveprofile.events.schema import Event
from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import DAY, Profile, ProfileUpdater

_CACHE_LIMIT = 1_000_000
_MIX = 0x9E3779B1


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


class FeatureBuilder:
    """Builds ``(indices, values)`` for events; :meth:`explain` gives the readable names."""

    #: prior and strength of the smoothed outcome rates (user and item target statistics)
    RATE_PRIOR = 0.5
    RATE_STRENGTH = 2.0

    def __init__(self, config: FeatureConfig, updater: ProfileUpdater) -> None:
        self.config = config
        self.mask = (1 << config.bits) - 1
        self._updater = updater
        self._cache: dict[str, int] = {}
        self._salts: dict[str, int] = {}
        self._h_counters = updater.h_counters
        self._h_interests = updater.h_interests

    def _salt(self, field: str) -> int:
        salt = self._salts.get(field)
        if salt is None:
            salt = self._salts[field] = _crc(field) * _MIX
        return salt

    def _hash(self, value: str) -> int:
        cache = self._cache
        h = cache.get(value)
        if h is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            h = cache[value] = _crc(value)
        return h

    def index(self, field: str, value: str = "") -> int:
        """The index of ``field=value`` (numeric features use the field name alone)."""
        return (self._salt(field) ^ self._hash(value)) & self.mask

    def cross(self, field: str, a: str, b: str) -> int:
        return (self._salt(field) ^ (self._hash(a) * _MIX + self._hash(b))) & self.mask

    def build(
        self, e: Event, p: Profile | None, item: ItemStats | None
    ) -> tuple[list[int], list[float]]:
        """Shared features of an event given the profile and item statistics before it."""
        names = self._features(e, p, item)
        idx = [self.cross(f, a, b) if b is not None else self.index(f, a) for f, a, b, _ in names]
        return idx, [v for _, _, _, v in names]

    def task_features(
        self, task: str, p: Profile | None, item: ItemStats | None
    ) -> tuple[list[int], list[float]]:
        """Features specific to one task: the user's and the item's past outcome rates."""
        idx: list[int] = []
        val: list[float] = []
        prior, strength = self.RATE_PRIOR, self.RATE_STRENGTH
        for who, stats in (("u", p), ("i", item)):
            if stats is None:
                idx.append(self.index(f"{who}_new_task"))
                val.append(1.0)
                continue
            rate = stats.outcome_rate(task, prior, strength)
            n = stats.examples.get(task, 0)
            idx += [
                self.index(f"{who}_rate"),
                self.index(f"{who}_rate_b", str(min(int(rate * 10), 9))),
                self.index(f"{who}_seen_b", str(min(int(math.log2(1 + n)), 12))),
            ]
            val += [rate - prior, 1.0, 1.0]
        return idx, val

    def explain(
        self, e: Event, p: Profile | None, item: ItemStats | None
    ) -> list[tuple[str, float]]:
        """The shared features with readable names, in the order :meth:`build` hashes them."""
        out = []
        for f, a, b, v in self._features(e, p, item):
            name = f if a == "" and b is None else f"{f}={a}" if b is None else f"{f}={a}|{b}"
            out.append((name, v))
        return out

    def _features(
        self, e: Event, p: Profile | None, item: ItemStats | None
    ) -> list[tuple[str, str, str | None, float]]:
        ts = e.ts
        feats: list[tuple[str, str, str | None, float]] = [
            ("bias", "", None, 1.0),
            ("user", e.user, None, 1.0),
            ("type", e.type, None, 1.0),
        ]
        if e.item_id is not None:
            feats.append(("item", e.item_id, None, 1.0))
        topics = e.topics()
        if topics:
            weight = 1.0 / math.sqrt(len(topics))
            for topic in topics:
                feats.append(("topic", topic, None, weight))
                if self.config.crosses:
                    feats.append(("user_x_topic", e.user, topic, weight))
        if self.config.time_of_day:
            moment = datetime.fromtimestamp(ts, UTC)
            feats.append(("hour", str(moment.hour), None, 1.0))
            feats.append(("weekday", str(moment.weekday()), None, 1.0))
        if p is None:
            feats.append(("user_new", "", None, 1.0))
        else:
            self._profile_features(e, p, topics, feats)
        if item is None:
            feats.append(("item_new", "", None, 1.0))
        else:
            # read decayed sums no earlier than their last update (events may come out of order)
            at = max(ts, item.last_ts)
            pop = item.popularity * 2.0 ** (-(at - item.anchor) / self._h_counters)
            feats.append(("item_pop", "", None, math.log1p(pop)))
            feats.append(("item_pop_b", str(min(int(math.log2(1 + pop)), 16)), None, 1.0))
            if item.value_n:
                mean = item.mean_value(prior=item.value_sum / item.value_n)
                feats.append(("item_value_b", str(round(mean * 2)), None, 1.0))
        return feats

    def _profile_features(
        self,
        e: Event,
        p: Profile,
        topics: tuple[str, ...],
        feats: list[tuple[str, str, str | None, float]],
    ) -> None:
        ts = e.ts
        recency = max(0.0, (ts - p.last_ts) / DAY)
        feats.append(("recency", "", None, math.log1p(recency)))
        feats.append(("recency_b", str(min(int(math.log2(1 + recency * 24)), 16)), None, 1.0))
        feats.append(("events_b", str(min(int(math.log2(1 + p.n)), 16)), None, 1.0))
        f_c = 2.0 ** (-(max(ts, p.last_ts) - p.anchor) / self._h_counters)
        for kind, stored in p.decayed.items():
            feats.append(("decayed", kind, None, math.log1p(stored * f_c)))
        if p.monetary:
            feats.append(("monetary_b", str(min(int(math.log2(1 + p.monetary)), 20)), None, 1.0))
        if p.value_n:
            feats.append(("user_value_b", str(round(2 * p.value_sum / p.value_n)), None, 1.0))
        interests = p.interests
        if topics and interests:
            total = sum(interests.values())
            share = sum(interests.get(t, 0.0) for t in topics) / total if total > 0 else 0.0
            feats.append(("affinity", "", None, share))
            feats.append(("affinity_b", str(min(int(share * 10), 9)), None, 1.0))
            top = max(interests, key=interests.__getitem__)
            feats.append(("top_interest", "1" if top in topics else "0", None, 1.0))

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

from liveprofile.config import FeatureConfig
from liveprofile.events.schema import Event
from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import DAY, Profile, ProfileUpdater

_CACHE_LIMIT = 1_000_000
_MIX = 0x9E3779B1


def _crc(text: str) -> int:
    """CRC32 of the text: stable across processes, unlike ``hash()``."""
    return zlib.crc32(text.encode())


#: a feature: its name ("user=42", "recency") or a cross (field, left, right), and its value
Feature = tuple[str | tuple[str, str, str], float]


class FeatureBuilder:
    """Builds ``(indices, values)`` for events; :meth:`explain` gives the readable names."""

    #: prior and strength of the smoothed outcome rates (user and item target statistics)
    RATE_PRIOR = 0.5
    RATE_STRENGTH = 2.0

    def __init__(self, config: FeatureConfig, updater: ProfileUpdater) -> None:
        self.config = config
        self.mask = (1 << config.bits) - 1
        self._updater = updater
        self._names: dict[str, int] = {}
        self._parts: dict[str, int] = {}
        self._h_counters = updater.h_counters
        self._crosses = config.crosses
        self._time = config.time_of_day

    def index(self, name: str) -> int:
        """The index of a feature name such as ``"user=42"`` or ``"recency"``."""
        names = self._names
        i = names.get(name)
        if i is None:
            if len(names) >= _CACHE_LIMIT:
                names.clear()
            i = names[name] = _crc(name) & self.mask
        return i

    def cross(self, field: str, a: str, b: str) -> int:
        """The index of a crossed feature, from the cached hashes of its parts."""
        parts = self._parts
        ha = parts.get(a)
        if ha is None:
            if len(parts) >= _CACHE_LIMIT:
                parts.clear()
            ha = parts[a] = _crc(a)
        hb = parts.get(b)
        if hb is None:
            hb = parts[b] = _crc(b)
        return ((ha * _MIX + hb) ^ self.index(field)) & self.mask

    def build(
        self, e: Event, p: Profile | None, item: ItemStats | None
    ) -> tuple[list[int], list[float]]:
        """Shared features of an event given the profile and item statistics before it."""
        feats = self._features(e, p, item)
        index, cross = self.index, self.cross
        return (
            [index(f) if isinstance(f, str) else cross(*f) for f, _ in feats],
            [v for _, v in feats],
        )

    def task_features(
        self, task: str, p: Profile | None, item: ItemStats | None
    ) -> tuple[list[int], list[float]]:
        """Features specific to one task: the user's and the item's past outcome rates."""
        feats = self._task_features(task, p, item)
        index = self.index
        return [index(f) for f, _ in feats], [v for _, v in feats]

    def explain(
        self, e: Event, p: Profile | None, item: ItemStats | None, task: str | None = None
    ) -> list[tuple[str, float]]:
        """The features with readable names, in the order :meth:`build` hashes them."""
        feats: list[tuple[str | tuple[str, str, str], float]] = list(self._features(e, p, item))
        if task is not None:
            feats.extend(self._task_features(task, p, item))
        return [(f if isinstance(f, str) else f"{f[0]}={f[1]}|{f[2]}", v) for f, v in feats]

    def _task_features(
        self, task: str, p: Profile | None, item: ItemStats | None
    ) -> list[tuple[str, float]]:
        feats: list[tuple[str, float]] = []
        prior, strength = self.RATE_PRIOR, self.RATE_STRENGTH
        for who, stats in (("u", p), ("i", item)):
            if stats is None:
                feats.append((f"{who}_new_task", 1.0))
                continue
            n = stats.examples.get(task, 0)
            rate = (stats.positives.get(task, 0) + prior * strength) / (n + strength)
            feats.append((f"{who}_rate", rate - prior))
            feats.append((f"{who}_rate_b={min(int(rate * 10), 9)}", 1.0))
            feats.append((f"{who}_seen_b={min(int(math.log2(1 + n)), 12)}", 1.0))
        return feats

    def _features(self, e: Event, p: Profile | None, item: ItemStats | None) -> list[Feature]:
        ts = e.ts
        user = e.user
        feats: list[Feature] = [("bias", 1.0), ("user=" + user, 1.0), ("type=" + e.type, 1.0)]
        if e.item_id is not None:
            feats.append(("item=" + e.item_id, 1.0))
        topics = e.topics()
        if topics:
            weight = 1.0 / math.sqrt(len(topics))
            for topic in topics:
                feats.append(("topic=" + topic, weight))
                if self._crosses:
                    feats.append((("user_x_topic", user, topic), weight))
        if self._time:
            day, second = divmod(int(ts), 86400)
            feats.append((_HOURS[second // 3600], 1.0))
            feats.append((_WEEKDAYS[(day + 3) % 7], 1.0))  # 1970-01-01 was a Thursday
        if p is None:
            feats.append(("user_new", 1.0))
        else:
            self._profile_features(ts, p, topics, feats)
        if item is None:
            feats.append(("item_new", 1.0))
        else:
            # read decayed sums no earlier than their last update (events may come out of order)
            at = max(ts, item.last_ts)
            pop = item.popularity * 2.0 ** (-(at - item.anchor) / self._h_counters)
            feats.append(("item_pop", math.log1p(pop)))
            feats.append((f"item_pop_b={min(int(math.log2(1 + pop)), 16)}", 1.0))
            if item.value_n:
                feats.append((f"item_value_b={round(2 * item.value_sum / item.value_n)}", 1.0))
        return feats

    def _profile_features(
        self, ts: float, p: Profile, topics: tuple[str, ...], feats: list[Feature]
    ) -> None:
        recency = max(0.0, (ts - p.last_ts) / DAY)
        feats.append(("recency", math.log1p(recency)))
        feats.append((f"recency_b={min(int(math.log2(1 + recency * 24)), 16)}", 1.0))
        feats.append((f"events_b={min(int(math.log2(1 + p.n)), 16)}", 1.0))
        f_c = 2.0 ** (-(max(ts, p.last_ts) - p.anchor) / self._h_counters)
        for kind, stored in p.decayed.items():
            feats.append(("decayed=" + kind, math.log1p(stored * f_c)))
        if p.monetary:
            feats.append((f"monetary_b={min(int(math.log2(1 + p.monetary)), 20)}", 1.0))
        if p.value_n:
            feats.append((f"user_value_b={round(2 * p.value_sum / p.value_n)}", 1.0))
        interests = p.interests
        if topics and interests:
            total = sum(interests.values())
            share = sum(interests.get(t, 0.0) for t in topics) / total if total > 0 else 0.0
            feats.append(("affinity", share))
            feats.append((f"affinity_b={min(int(share * 10), 9)}", 1.0))
            top = max(interests, key=interests.__getitem__)
            feats.append(("top_interest=1" if top in topics else "top_interest=0", 1.0))


_HOURS = [f"hour={h}" for h in range(24)]
_WEEKDAYS = [f"weekday={d}" for d in range(7)]

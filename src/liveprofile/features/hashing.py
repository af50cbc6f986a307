"""The hashed feature space: names, their indices, and the index tables the kernel reads.

Every feature has a name (``"user=42"``, ``"topic=Dairy"``, or ``"recency"`` for a numeric one),
hashed with CRC32 into a space of ``2 ** bits`` indices; crosses combine the hashes of their
parts (:func:`~liveprofile.features.buckets.cross_index`). :class:`FeatureBuilder` holds the
indices of the fixed features (:data:`SCALARS`, the buckets of each of :data:`TABLES`, the
behaviour tables) and hashes a request's strings; the features of an event are built by the
kernel's feature functions (:mod:`liveprofile.engine.featurize`) from these tables, and read
back as names by :mod:`liveprofile.engine.featurenames`.

>>> from liveprofile.config import FeatureConfig, ProfileConfig
>>> from liveprofile.profile import ProfileUpdater
>>> builder = FeatureBuilder(FeatureConfig(bits=16), ProfileUpdater(ProfileConfig()))
>>> builder.index("bias") == builder.scalars["bias"], len(builder.tables["hour"])
(True, 24)
>>> builder.value_index("user", "u1") == builder.index("user=u1") < 2 ** 16
True
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from liveprofile.config import FeatureConfig
from liveprofile.features.behaviour import table_names
from liveprofile.features.buckets import MIX
from liveprofile.profile.state import ProfileUpdater

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
    """The indices of the fixed features, and the hashes of a request's strings (cached).

    Bucketed features are tables of precomputed indices, so the kernel never builds a string;
    every index is registered with the name it was hashed from (:attr:`names`).
    """

    #: prior and strength of the smoothed outcome rates (user and item target statistics)
    RATE_PRIOR = 0.5
    RATE_STRENGTH = 2.0

    def __init__(self, config: FeatureConfig, updater: ProfileUpdater) -> None:
        self.config = config
        self.mask = (1 << config.bits) - 1
        self.names: dict[int, str] = {}
        self._values: dict[str, dict[str, int]] = {}
        self._parts: dict[str, int] = {}
        idx = self.index
        #: the index of each scalar feature, by name
        self.scalars = {name: idx(name) for name in SCALARS}
        #: the indices of each bucketed feature's buckets, by name
        self.tables = {name: _table(idx, name, size) for name, size in TABLES}
        #: the behaviour feature tables (``features.behaviour``), in ``behaviour.table_names``
        #: order; empty when off
        on = config.behaviour and updater.behaviour.room > 0
        names = table_names(updater.behaviour.types, bool(updater.behaviour.value))
        self.behaviour_tables = [_table(idx, name, size) for name, size in names] if on else []

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


def _table(index: Callable[[str], int], field: str, size: int) -> list[int]:
    """Indices of ``field=0`` .. ``field=size-1``: a bucketed feature without string building."""
    return [index(f"{field}={k}") for k in range(size)]

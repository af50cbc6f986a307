"""Features of the user's own behaviour on the event's item and on its category.

For each of the two (when the event has it), from the profile *before* the event: whether the
user touched it at all and converted on it (``b_item_state``: 0 touched, 1 converted, 2 never
touched), a log2 bucket of the hours since the last interaction (``b_item_ago``) and, per
``profile.behaviour_types`` type with a count, a log2 bucket of four times its decayed count
(``b_item=view``; a type never seen there, or nearly decayed away, adds no feature: its bucket 0
is the reference the others are learned against, so a type a dataset never has costs nothing)
and, with ``profile.behaviour_value``, a bucket of the mean value of the user's events there
(``b_category_value``: an eighth-log2 scale, :func:`value_bucket`; a user's ratings of a genre).
All are one-hot, hashed like the other features; the compiled twin is
:func:`liveprofile.engine.behaviour.behaviour_features`, which reads the same tables
(:func:`table_names` rows after ``hashing.TABLES``).

>>> table_names(["view", "purchase"])[:4]
[('b_item_state', 3), ('b_item_ago', 17), ('b_item=view', 12), ('b_item=purchase', 12)]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from liveprofile.durations import HOUR
from liveprofile.profile.behaviour import (
    B_CONVERTED,
    B_COUNTS,
    B_LAST,
    KINDS,
    mean_value,
    unpack,
)

if TYPE_CHECKING:
    from liveprofile.profile.state import Profile

#: buckets of the state (touched, converted, never), of the hours since, of a count
STATE_BUCKETS, AGO_BUCKETS, COUNT_BUCKETS = 3, 17, 12
#: the state's bucket of a key the user never touched (or that was trimmed away)
NEVER = 2
#: counts are bucketed at this scale: a quarter of an event (decayed) is the first bucket past 0
COUNT_SCALE = 4.0
#: buckets of a mean value (``profile.behaviour_value``), this many per doubling of ``1 + x``
VALUE_BUCKETS, VALUE_SCALE = 65, 8.0


def value_bucket(x: float) -> int:
    """The bucket of a mean value ``x``: eight per doubling of ``1 + x`` (a rating's half
    points apart from 3 up), 0 for none or less.

    >>> [value_bucket(x) for x in (0.0, 1.0, 3.0, 3.5, 4.0, 4.5, 5.0, 1e9)]
    [0, 8, 16, 17, 18, 19, 20, 64]
    """
    if not x > 0.0:
        return 0
    b = int(VALUE_SCALE * math.log2(1.0 + x))
    return b if b < VALUE_BUCKETS - 1 else VALUE_BUCKETS - 1


def table_names(types: list[str] | tuple[str, ...], value: bool = False) -> list[tuple[str, int]]:
    """The bucketed behaviour features, by kind (item, category): state, hours since, a
    count per type and, with ``value``, the mean value."""
    out: list[tuple[str, int]] = []
    for kind in KINDS:
        out += [(f"b_{kind}_state", STATE_BUCKETS), (f"b_{kind}_ago", AGO_BUCKETS)]
        out += [(f"b_{kind}={t}", COUNT_BUCKETS) for t in types]
        if value:
            out.append((f"b_{kind}_value", VALUE_BUCKETS))
    return out


def add_features(
    tables: list[list[int]],
    p: Profile,
    item: str | None,
    category: str | None,
    ts: float,
    f_c: float,
    idx: list[int],
    val: list[float],
    log2_bucket: Callable[[list[int], float], int],
    value: int = 0,
) -> None:
    """Append the behaviour features of ``p`` on ``item`` and ``category`` at ``ts``;
    ``tables``: the indices of :func:`table_names`, ``f_c``: the counters' decay factor from
    the profile's anchor to the time features are read at, ``log2_bucket``: the feature
    builder's bucketing, ``value``: the value sum's column (``BehaviourTracker.value``; 0:
    none, and no value table)."""
    per_kind = len(tables) // len(KINDS)
    n_counts = per_kind - 2 - (1 if value else 0)
    for k, (entries, key) in enumerate(
        ((p.behaviour_items, item), (p.behaviour_categories, category))
    ):
        if key is None:
            continue
        base = k * per_kind
        packed = entries.get(key)
        if packed is None:
            idx.append(tables[base][NEVER])
            val.append(1.0)
            continue
        entry = unpack(packed)
        idx.append(tables[base][1 if entry[B_CONVERTED] > 0 else 0])
        idx.append(log2_bucket(tables[base + 1], max(0.0, ts - entry[B_LAST]) / HOUR))
        val += (1.0, 1.0)
        for j in range(B_COUNTS, min(len(entry), B_COUNTS + n_counts)):
            x = COUNT_SCALE * entry[j] * f_c
            if 1.0 + x >= 2.0:  # bucket 1 or more (the compiled twin tests the same)
                idx.append(log2_bucket(tables[base + j], x))
                val.append(1.0)
        if value:  # a list written before the sum was kept reads as no value
            x = mean_value(entry, value) if len(entry) > value else 0.0
            idx.append(tables[base + per_kind - 1][value_bucket(x)])
            val.append(1.0)

"""Features of the user's own behaviour on the event's item and on its category.

For each of the two (when the event has it), from the profile *before* the event: whether the
user touched it at all and converted on it (``b_item_state``: 0 touched, 1 converted, 2 never
touched), a log2 bucket of the hours since the last interaction (``b_item_ago``) and, per
``profile.behaviour_types`` type with a count, a log2 bucket of four times its decayed count
(``b_item=view``; a type never seen there, or nearly decayed away, adds no feature: its bucket 0
is the reference the others are learned against, so a type a dataset never has costs nothing)
and, with ``profile.behaviour_value``, a bucket of the mean value of the user's events there
(``b_category_value``: an eighth-log2 scale, :func:`value_bucket`; a user's ratings of a genre).
All are one-hot, hashed like the other features, and built by the kernel's
:func:`liveprofile.engine.behaviour.behaviour_features`, from the tables named here
(:func:`table_names` rows after ``hashing.TABLES``).

>>> table_names(["view", "purchase"])[:4]
[('b_item_state', 3), ('b_item_ago', 17), ('b_item=view', 12), ('b_item=purchase', 12)]
"""

from __future__ import annotations

import math

from liveprofile.profile.behaviour import KINDS

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

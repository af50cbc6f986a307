"""How the compiled step lays state out in arrays: columns, feature tables and record kinds.

Every layout here is derived from the definition it mirrors, never typed out a second time: the
item columns name :class:`~liveprofile.profile.items.ItemStats` fields, the rows of the feature
tables follow :data:`liveprofile.features.hashing.SCALARS` and ``TABLES``, and the rules both
engines share (decay, spend days, the cross mix, model operations) are imported from the modules
that own them. The kernel (:mod:`liveprofile.engine.kernel`) and the Python code
around it import what they share from here.

Numba's cache notices a change to the kernel's own source file only: after changing a value here,
clear the cache (``find src -name __pycache__ -path '*engine*' -exec rm -r {} +``).

>>> ITEM_FLOATS[I_POP], ITEM_INTS[I_CAT]
('popularity', 'category')
>>> SCALARS[F_CROSS_SALT], TABLES[T_HOUR]
('user_x_topic', ('hour', 24))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from liveprofile.durations import DAY, HOUR
from liveprofile.errors import LiveprofileError
from liveprofile.features.hashing import MIX, SCALARS, TABLES
from liveprofile.learn.base import LEARN, PREDICT, PREDICT_LEARN
from liveprofile.profile.decay import REBASE_AFTER
from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import KEY_EXAMPLES, KEY_SHIFT, SPEND_DAYS

if TYPE_CHECKING:
    from liveprofile.features.hashing import FeatureBuilder

I64 = npt.NDArray[np.int64]
__all__ = [
    "DAY",
    "HOUR",
    "KEY_EXAMPLES",
    "KEY_SHIFT",
    "LEARN",
    "MIX",
    "PREDICT",
    "PREDICT_LEARN",
    "REBASE_AFTER",
    "SPEND_DAYS",
]

# -- what connects model outputs back to profiles and metrics ---------------------------------

#: an immediate example, an opened exposure (predicted now, learned later), a resolved one
R_IMMEDIATE, R_OPENED, R_RESOLVED = 0, 1, 2

# -- profiles as rows -------------------------------------------------------------------------

#: the float and int columns of a profile row (``exists``: the profile exists)
PROFILE_FLOATS = ("anchor", "first_ts", "last_ts", "monetary", "last_purchase_ts", "value_sum")
PROFILE_INTS = ("n", "purchases", "value_n", "exists")
P_ANCHOR, P_FIRST, P_LAST, P_MONETARY, P_LASTPUR, P_VSUM = range(len(PROFILE_FLOATS))
P_N, P_PURCHASES, P_VN, P_EXISTS = range(len(PROFILE_INTS))
#: days of spend a profile row has room for: SPEND_DAYS + 1 kept, one being added, and slack
SPEND_ROOM = SPEND_DAYS + 6

# -- item statistics as rows ------------------------------------------------------------------

#: the float and int columns of an item row, named by the ItemStats field they hold
#: (``category``: the topic code, -1 for none; ``exists``: not an ItemStats field)
ITEM_FLOATS = ("anchor", "last_ts", "popularity", "value_sum")
ITEM_INTS = ("n", "value_n", "category", "exists")
I_ANCHOR, I_LAST, I_POP, I_VSUM = (ITEM_FLOATS.index(f) for f in ITEM_FLOATS)
I_N, I_VN, I_CAT, I_EXISTS = (ITEM_INTS.index(f) for f in ITEM_INTS)
#: the per-task count tables of an item (and a profile), by the ItemStats field they hold
COUNTS = ("examples", "positives")
C_EXAMPLES, C_POSITIVES = range(len(COUNTS))

# -- feature tables ---------------------------------------------------------------------------

(
    F_BIAS,
    F_USER_NEW,
    F_ITEM_NEW,
    F_RECENCY,
    F_AFFINITY,
    F_ITEM_POP,
    F_CROSS_SALT,
    F_INTEREST,
    F_KEY_RATE,
    F_TOP0,
    F_TOP1,
    F_U_NEW_TASK,
    F_U_RATE,
    F_I_NEW_TASK,
    F_I_RATE,
) = (
    SCALARS.index(name)
    for name in (
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
)
_TABLE_NAMES = [name for name, _ in TABLES]
(
    T_INTEREST,
    T_KEY_RATE,
    T_KEY_SEEN,
    T_HOUR,
    T_WEEKDAY,
    T_RECENCY,
    T_EVENTS,
    T_MONETARY,
    T_AFFINITY,
    T_ITEM_POP,
    T_USER_VALUE,
    T_ITEM_VALUE,
    T_U_RATE,
    T_U_SEEN,
    T_I_RATE,
    T_I_SEEN,
) = (
    _TABLE_NAMES.index(name)
    for name in (
        "interest_b",
        "key_rate_b",
        "key_seen_b",
        "hour",
        "weekday",
        "recency_b",
        "events_b",
        "monetary_b",
        "affinity_b",
        "item_pop_b",
        "user_value_b",
        "item_value_b",
        "u_rate_b",
        "u_seen_b",
        "i_rate_b",
        "i_seen_b",
    )
)

#: float parameters (entries of ``fp``)
FP_H_COUNTERS, FP_H_INTERESTS, FP_H_MIN, FP_WATERMARK, FP_PRIOR, FP_STRENGTH, FP_TWO = range(7)
#: int parameters (entries of ``ip``); IP_TICK: the count of example records so far, which
#: orders the keys of the stored dicts
IP_CROSSES, IP_TIME, IP_TOP_K, IP_KEY_ROOM, IP_RECENT, IP_TRACK, IP_MASK, IP_TICK = range(8)
#: keys kept per behaviour map (``profile.behaviour_keys``); the value sum's column
#: (``BehaviourTracker.value``, 0: none); IP_SIZE: how many int parameters
IP_BEH_ROOM, IP_BEH_VALUE = 8, 9
IP_SIZE = 10
#: the first row of the behaviour feature tables (``FeatureBuilder.behaviour_tables``), after
#: ``TABLES``'s; none when the features are off
T_BEHAVIOUR = len(TABLES)
#: waiting examples are keyed (user * tasks + task) * KEYSPACE + key
KEYSPACE = 1 << 31


def feature_tables(builder: FeatureBuilder) -> tuple[I64, I64, I64]:
    """The builder's feature indices as the kernel reads them: scalar indices (by ``F_*``),
    bucket tables (a row per ``T_*``) and each table's last bucket.

    >>> from liveprofile.config import FeatureConfig, ProfileConfig
    >>> from liveprofile.features.hashing import FeatureBuilder
    >>> from liveprofile.profile import ProfileUpdater
    >>> builder = FeatureBuilder(FeatureConfig(), ProfileUpdater(ProfileConfig()))
    >>> scalars, tables, last = feature_tables(builder)
    >>> int(scalars[F_BIAS]) == builder.index("bias"), int(last[T_WEEKDAY])
    (True, 6)
    """
    scalars = np.array([builder.scalars[name] for name in SCALARS], np.int64)
    rows = [builder.tables[name] for name, _ in TABLES] + builder.behaviour_tables
    tables = np.zeros((len(rows), max(len(row) for row in rows)), np.int64)
    for r, row in enumerate(rows):
        tables[r, : len(row)] = row
    last = np.array([len(row) - 1 for row in rows], np.int64)
    return scalars, tables, last


def _check_item_columns() -> None:
    """Every ItemStats field has a column (or a count table) here."""
    fields = set(ItemStats.__struct_fields__)
    held = {*ITEM_FLOATS, *ITEM_INTS, *COUNTS} - {"exists"}
    if fields != held:
        raise LiveprofileError(
            f"ItemStats fields {sorted(fields ^ held)} have no column in the compiled layout "
            "(liveprofile.engine.layout)"
        )


_check_item_columns()

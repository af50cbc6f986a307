"""The rules the profile and feature modules define, compiled for the kernel: each written once.

Every function here is a function of the profile and feature modules, compiled by
:data:`~liveprofile.engine.jit.leaf` as it is (no copy of its body): the decay of
:mod:`liveprofile.profile.decay`, the buckets, cross hash and time of day of
:mod:`liveprofile.features.buckets`, the shrunk rates of :mod:`liveprofile.profile.items`, the
packed key outcomes and spend of :mod:`liveprofile.profile.state`, the mean value and its bucket
of the behaviour features. The ``*_in`` lookups find a bucket in the kernel's feature tables
(``params.tabs``, a row per ``layout.T_*``; ``params.last``: each row's last bucket).

The compiled step passes ``params.fp[layout.FP_TWO]`` as the ``two`` of the decay rules (see
:mod:`liveprofile.profile.decay`). Numba's cache notices a change to a function's own source
file only: after changing a rule, clear the cache of the engine's modules too
(``find src -name __pycache__ -path '*engine*' -exec rm -r {} +``).
"""

from __future__ import annotations

from liveprofile.engine.jit import leaf
from liveprofile.features import behaviour as features_behaviour
from liveprofile.features import buckets
from liveprofile.profile import behaviour as profile_behaviour
from liveprofile.profile import decay, items, state

forward_weight = leaf(decay.forward_weight)
decay_factor = leaf(decay.decay_factor)
needs_rebase = leaf(decay.needs_rebase)
shrunk_rate = leaf(items.shrunk_rate)
key_outcome_step = leaf(state.key_outcome_step)
key_outcome_counts = leaf(state.key_outcome_counts)
spend_day = leaf(state.spend_day)
cents = leaf(state.cents)
cross_index = leaf(buckets.cross_index)
day_parts = leaf(buckets.day_parts)
mean_value = leaf(profile_behaviour.mean_value)
trim_limit = leaf(profile_behaviour.trim_limit)
value_bucket = leaf(features_behaviour.value_bucket)
_log2_bucket = leaf(buckets.log2_bucket)
_decile = leaf(buckets.decile)
_rounded = leaf(buckets.rounded)


@leaf
def log2_in(params, row, x):  # type: ignore[no-untyped-def]
    """The feature index of ``x``'s bucket in table ``row`` by ``buckets.log2_bucket``."""
    return params.tabs[row, _log2_bucket(x, params.last[row])]


@leaf
def decile_in(params, row, x):  # type: ignore[no-untyped-def]
    """The feature index of ``x``'s bucket in table ``row`` by ``buckets.decile``."""
    return params.tabs[row, _decile(x, params.last[row])]


@leaf
def rounded_in(params, row, x):  # type: ignore[no-untyped-def]
    """The feature index of ``x``'s bucket in table ``row`` by ``buckets.rounded``."""
    return params.tabs[row, _rounded(x, params.last[row])]

"""How recommendations are ordered: the task's model blended with how likely the user is to come
across the item at all.

A task like ``convert`` estimates P(purchase | the item is viewed); what a user buys next also
depends on whether they will view it. The blend ranks by the log of a product of four factors,
each a plain estimate with weight one (no fitted weights):

- ``model``: the task model's P(y=1) for the item shown to the user now;
- ``popularity``: the item's decayed event count now (how often anyone comes across it);
- ``interest``: the share of the user's decayed interest weight that the item's category holds
  (how often this user visits that category);
- ``history``: ``1 + `` the user's own past examples of the task on this item (e.g. views of
  it): a user who keeps coming back to an item is more likely to meet it again.

Factors are floored (half an event, a thousandth of the interest), so an unknown item or a
category the user never visited lowers a candidate without ruling it out. The choice of factors
was made on held-out splits (``benchmarks/recommend.py --validate``), not on the test split.

>>> round(blend(0.2, popularity=8.0, interest=0.5, history=1), 6)  # log(0.2 * 8 * 0.5 * 2)
0.470004
>>> factors(0.2, popularity=0.0, interest=0.0, history=0)  # floored: half an event, 1/1000
{'model': -1.609438, 'popularity': -0.693147, 'interest': -6.907755, 'history': 0.0}
"""

from __future__ import annotations

import math

from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import Profile

#: the orders a recommendation can be asked for
RANKS = ("learned", "blend", "model")
#: floors of the popularity (events) and interest share factors
MIN_POPULARITY = 0.5
MIN_INTEREST = 1e-3
_P = 1e-12


def factors(score: float, popularity: float, interest: float, history: int) -> dict[str, float]:
    """Each factor's log (rounded to 6 places), as shown with a ranked item."""
    return {
        "model": round(math.log(min(max(score, _P), 1.0)), 6),
        "popularity": round(math.log(max(popularity, MIN_POPULARITY)), 6),
        "interest": round(math.log(max(interest, MIN_INTEREST)), 6),
        "history": round(math.log1p(max(history, 0)), 6),
    }


def blend(score: float, popularity: float, interest: float, history: int) -> float:
    """The blended ranking score: the sum of the factors' logs."""
    return (
        math.log(min(max(score, _P), 1.0))
        + math.log(max(popularity, MIN_POPULARITY))
        + math.log(max(interest, MIN_INTEREST))
        + math.log1p(max(history, 0))
    )


def popularity_now(stats: ItemStats | None, ts: float, half_life: float) -> float:
    """The item's decayed event count at ``ts`` (0 for an item never seen)."""
    if stats is None or stats.popularity <= 0:
        return 0.0
    return float(stats.popularity * 2.0 ** ((stats.anchor - ts) / half_life))


def interest_share(p: Profile, category: str | None) -> float:
    """The share of the user's interest weight held by ``category`` (0 for none)."""
    total = sum(p.interests.values())
    if category is None or total <= 0:
        return 0.0
    return p.interests.get(category, 0.0) / total


def history(p: Profile, task: str, item: str) -> int:
    """The user's past examples of ``task`` on ``item`` (kept for delayed tasks keyed by item;
    0 for others and for keys the profile no longer holds)."""
    return p.key_outcome_rate(task, item, 0.5, 1.0)[1]

"""Identity resolution: folding an anonymous visitor's profile into the known user's.

When an event carries both ``anonymous_id`` and ``user_id``, the anonymous profile is merged into
the user's and the anonymous id becomes an alias: later events under either id land on the merged
profile. Counters add up; decayed counters and interests are brought to a common anchor first, so
the merged profile equals (up to float rounding, and to the top-K cut of interests) the profile
that all events of both ids would have built together.

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.core import Core
>>> from liveprofile.events import Event
>>> core = Core(PipelineConfig())
>>> state = core.new_state()
>>> _ = core.step(state, [
...     Event("e1", "a1", "view", 0.0, category="tea"),
...     Event("e2", "u1", "purchase", 86400.0, category="tea", value=4.0),
... ])
>>> updater, anon, known = core.updater, state.profiles["a1"], state.profiles["u1"]
>>> merge_profiles(updater, known, anon)
>>> known.n, known.counts, known.first_ts, known.aliases
(2, {'purchase': 1, 'view': 1}, 0.0, ['a1'])
>>> round(updater.interests_at(known, 86400.0)["tea"], 4)  # 5 (purchase) + 1 halved in 30 days
5.9772
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from liveprofile.profile.state import SPEND_DAYS, Profile, ProfileUpdater

K = TypeVar("K")
N = TypeVar("N", int, float)

#: anonymous ids remembered per profile (their links are deleted with the profile)
MAX_ALIASES = 64


def merge_profiles(updater: ProfileUpdater, into: Profile, other: Profile) -> None:
    """Fold ``other`` (an anonymous profile) into ``into``; ``other`` must not be used after."""
    if other.anchor > into.anchor:
        updater.rebase(into, other.anchor)
    elif other.anchor < into.anchor:
        updater.rebase(other, into.anchor)
    n = into.n
    into.n = n + other.n
    if other.n:
        into.first_ts = other.first_ts if n == 0 else min(into.first_ts, other.first_ts)
        into.last_ts = other.last_ts if n == 0 else max(into.last_ts, other.last_ts)
    add_into(into.counts, other.counts)
    add_into(into.decayed, other.decayed)
    add_into(into.interests, other.interests)
    updater.keep_top_interests(into)
    into.purchases += other.purchases
    into.monetary += other.monetary
    into.value_sum += other.value_sum
    into.value_n += other.value_n
    if other.last_purchase_ts is not None and (
        into.last_purchase_ts is None or other.last_purchase_ts > into.last_purchase_ts
    ):
        into.last_purchase_ts = other.last_purchase_ts
    add_into(into.positives, other.positives)
    add_into(into.examples, other.examples)
    add_into(into.key_outcomes, other.key_outcomes)
    updater.behaviour.merge(into, other)
    into.scores = {**other.scores, **into.scores}
    if other.spend:
        add_into(into.spend, other.spend)
        cutoff = max(into.spend) - SPEND_DAYS
        into.spend = {d: c for d, c in into.spend.items() if d >= cutoff}
    updater.risk.merge(into, other)
    aliases = [a for a in (*into.aliases, other.user, *other.aliases) if a != into.user]
    into.aliases = list(dict.fromkeys(aliases))[-MAX_ALIASES:]


def add_into(into: dict[K, N], other: Mapping[K, N]) -> None:
    """Add ``other``'s values to ``into``'s: its new keys after ``into``'s, in its order."""
    for key, value in other.items():
        into[key] = into.get(key, 0) + value

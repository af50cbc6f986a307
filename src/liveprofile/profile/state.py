"""The user profile, and how it reads.

Everything is a function of event time: counters and interests are forward-decayed sums (see
:mod:`liveprofile.profile.decay`), so applying the same events in any order gives the same profile
(up to float rounding) as long as fewer than ``top_k`` interest keys compete for room. The step
(:mod:`liveprofile.engine.kernel`) applies events to profiles; :class:`ProfileUpdater` reads
them (:meth:`~ProfileUpdater.view`), and moves their decay anchor for identity merges.

>>> from liveprofile.config import PipelineConfig, ProfileConfig
>>> from liveprofile.engine.core import Core
>>> from liveprofile.events import Event
>>> core = Core(PipelineConfig(profile=ProfileConfig(interests_half_life=86400)))
>>> state = core.new_state()
>>> _ = core.step(state, [
...     Event("e1", "u1", "purchase", 0.0, item_id="i1", category="dairy", value=3.5),
...     Event("e2", "u1", "view", 86400.0, item_id="i2", category="bakery"),
... ])
>>> view = core.updater.view(state.profiles["u1"], at=86400.0)
>>> view["interests"]
{'dairy': 2.5, 'bakery': 1.0}
>>> view["frequency"], view["monetary"], view["counts"]
(1, 3.5, {'purchase': 1, 'view': 1})
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

from liveprofile.config import ProfileConfig, RiskConfig
from liveprofile.durations import DAY
from liveprofile.profile.behaviour import BehaviourTracker, trim_limit
from liveprofile.profile.decay import decay_factor, decayed_value, rebase_factor
from liveprofile.profile.items import shrunk_rate
from liveprofile.profile.risk import Counts, ItemGroups, Recent, RiskTracker
from liveprofile.store.codec import VersionedCodec

#: 2: with the behaviour maps (a profile of schema 1 reads with them empty)
PROFILE_SCHEMA = 2
RFM = ("recency", "frequency", "monetary")
#: days of spend kept per profile, and the windows profiles and rules offer (monetary_30d, ...)
SPEND_DAYS = 90
SPEND_WINDOWS = (7, 30, 90)
#: a key outcome packs its positives above this many bits and its examples below
KEY_SHIFT = 24
KEY_EXAMPLES = (1 << KEY_SHIFT) - 1

# Rules of the step (the compiled step compiles these functions with numba, engine/rules.py).


def key_outcome_step(positive: bool) -> int:
    """What one outcome adds to a packed key outcome (:attr:`Profile.key_outcomes`)."""
    return (1 << KEY_SHIFT if positive else 0) + 1


def key_outcome_counts(packed: int) -> tuple[int, int]:
    """The positives and examples of a packed key outcome.

    >>> key_outcome_counts(key_outcome_step(True) + key_outcome_step(False))
    (1, 2)
    """
    return packed >> KEY_SHIFT, packed & KEY_EXAMPLES


def spend_day(ts: float) -> int:
    """The day of event time ``ts`` that :attr:`Profile.spend` counts a purchase on."""
    return int(ts // DAY)


def cents(value: float) -> int:
    """A purchase's value in whole cents, as :attr:`Profile.spend` adds it up (half to even)."""
    return round(value * 100)


def key_outcome_name(task: str, key: str) -> int:
    """How :attr:`Profile.key_outcomes` names the outcomes of ``task`` on ``key``.

    >>> key_outcome_name("buy", "dairy") == zlib.crc32(b"buy:dairy")
    True
    """
    return zlib.crc32(f"{task}:{key}".encode())


class Profile(msgspec.Struct, array_like=True, gc=False):
    """One user's state. Decayed fields are stored relative to ``anchor`` (forward decay)."""

    user: str
    anchor: float
    first_ts: float
    last_ts: float
    n: int = 0
    counts: dict[str, int] = {}
    decayed: dict[str, float] = {}
    interests: dict[str, float] = {}
    purchases: int = 0
    monetary: float = 0.0
    last_purchase_ts: float | None = None
    value_sum: float = 0.0
    value_n: int = 0
    positives: dict[str, int] = {}
    examples: dict[str, int] = {}
    scores: dict[str, float] = {}
    traits: dict[str, float | bool | str] = {}
    #: outcomes of delayed examples per task and key, in bounded room: CRC32 of "task:key" ->
    #: positives << 24 | examples (see :meth:`record_key_outcome`)
    key_outcomes: dict[int, int] = {}
    #: money spent per day of event time (day number -> cents), for the last SPEND_DAYS days
    spend: dict[int, int] = {}
    #: segments the user belongs to, by name, sorted (see ``liveprofile.profile.segments``)
    segments: list[str] = []
    #: anonymous ids whose profiles were merged into this one (see ``merge_profiles``)
    aliases: list[str] = []

    def spent_within(self, days: int, at: float) -> float:
        """Money spent in the ``days`` days of event time up to and including ``at``'s day."""
        since = int(at // DAY) - days
        return sum(c for d, c in self.spend.items() if d > since) / 100

    #: the newest events, oldest first (see ``liveprofile.profile.risk``)
    recent: list[Recent] = []
    #: what the velocity counts still need: recent event and purchase times, recent items
    v_events: Counts = []
    v_purchases: Counts = []
    v_items: ItemGroups = []
    #: the anomaly detector's score of the user's latest scored event
    anomaly: float | None = None
    #: made by events with only an ``anonymous_id``: the one kind of profile an identity link
    #: may fold into another (see ``liveprofile.engine.screen``)
    anonymous: bool = False
    #: behaviour per item and per category touched, bounded (see ``liveprofile.profile.behaviour``)
    behaviour_items: dict[str, bytes] = {}
    behaviour_categories: dict[str, bytes] = {}

    def outcome_rate(self, task: str, prior: float, strength: float) -> float:
        """This user's positive rate for ``task``, shrunk toward ``prior``."""
        return shrunk_rate(self.positives.get(task, 0), self.examples.get(task, 0), prior, strength)

    def record_outcome(self, task: str, positive: bool) -> None:
        self.examples[task] = self.examples.get(task, 0) + 1
        if positive:
            self.positives[task] = self.positives.get(task, 0) + 1

    def record_key_outcome(self, task: str, key: str, positive: bool, room: int) -> None:
        """Count an outcome of ``task`` for one key (e.g. a category). When the keys outgrow
        ``room`` by a quarter, the ones with the fewest examples go, back down to ``room``."""
        outcomes = self.key_outcomes
        name = key_outcome_name(task, key)
        outcomes[name] = outcomes.get(name, 0) + key_outcome_step(positive)
        if len(outcomes) > trim_limit(room):
            kept = sorted(outcomes.items(), key=lambda kv: -(kv[1] & KEY_EXAMPLES))[:room]
            self.key_outcomes = dict(kept)

    def key_outcome_rate(
        self, task: str, key: str, prior: float, strength: float
    ) -> tuple[float, int]:
        """This user's positive rate for ``task`` on one key, shrunk toward ``prior``, and n."""
        positives, n = key_outcome_counts(self.key_outcomes.get(key_outcome_name(task, key), 0))
        return shrunk_rate(positives, n, prior, strength), n


class ProfileUpdater:
    """Reads profiles according to a :class:`ProfileConfig` (and a :class:`RiskConfig` for the
    recent events and velocity counts), and makes, rebases and trims them for the lifecycle
    (:mod:`liveprofile.profile.identity`)."""

    def __init__(self, config: ProfileConfig, risk: RiskConfig | None = None) -> None:
        self.config = config
        self.risk = RiskTracker(risk or RiskConfig())
        self.h_counters = config.counters_half_life_s
        self.h_interests = config.interests_half_life_s
        self._top_k = config.top_k
        self.behaviour = BehaviourTracker(config, self.h_counters)

    def new(self, user: str, ts: float) -> Profile:
        return Profile(user=user, anchor=ts, first_ts=ts, last_ts=ts)

    def keep_top_interests(self, p: Profile) -> None:
        """Keep the top-K interests: every entry shares the anchor, so values compare directly."""
        interests = p.interests
        drop = len(interests) - self._top_k
        if drop <= 0:
            return
        for key in sorted(interests, key=interests.__getitem__)[:drop]:
            del interests[key]

    def rebase(self, p: Profile, anchor: float) -> None:
        """Move the profile's decay anchor to ``anchor`` (values are unchanged at any time)."""
        f_c = rebase_factor(anchor, p.anchor, self.h_counters)
        f_i = rebase_factor(anchor, p.anchor, self.h_interests)
        p.decayed = {k: v * f_c for k, v in p.decayed.items()}
        self.behaviour.rebase(p, f_c)
        p.interests = {k: v * f_i for k, v in p.interests.items()}
        p.anchor = anchor

    def decayed_counts(self, p: Profile, at: float) -> dict[str, float]:
        return {k: decayed_value(v, at, p.anchor, self.h_counters) for k, v in p.decayed.items()}

    def interests_unsorted(self, p: Profile, at: float) -> dict[str, float]:
        """Decayed interest weights at time ``at``, in no particular order."""
        f = decay_factor(at, p.anchor, self.h_interests)
        return {k: v * f for k, v in p.interests.items()}

    def interests_at(self, p: Profile, at: float) -> dict[str, float]:
        """Decayed interest weights at time ``at``, strongest first."""
        f = decay_factor(at, p.anchor, self.h_interests)
        return {k: v * f for k, v in sorted(p.interests.items(), key=lambda kv: -kv[1])}

    def view(
        self, p: Profile, at: float | None = None, rfm: tuple[int, int, int] | None = None
    ) -> dict[str, Any]:
        """A readable snapshot of the profile as of event time ``at`` (default: its last event),
        with its RFM scores against the population when given (see ``profile.population``)."""
        at = p.last_ts if at is None else at
        return {
            "user": p.user,
            "as_of": at,
            "first_seen": p.first_ts,
            "last_seen": p.last_ts,
            "recency_days": max(0.0, (at - p.last_ts) / DAY),
            "lifecycle": lifecycle(p, at),
            "rfm": None if rfm is None else dict(zip(RFM, rfm, strict=True)),
            "days_since_last_purchase": None
            if p.last_purchase_ts is None
            else max(0.0, (at - p.last_purchase_ts) / DAY),
            "frequency": p.purchases,
            "monetary": round(p.monetary, 6),
            **{f"monetary_{d}d": round(p.spent_within(d, at), 2) for d in SPEND_WINDOWS},
            "events": p.n,
            "counts": dict(p.counts),
            "decayed_counts": {k: round(v, 6) for k, v in self.decayed_counts(p, at).items()},
            "interests": {k: round(v, 6) for k, v in self.interests_at(p, at).items()},
            "mean_value": p.value_sum / p.value_n if p.value_n else None,
            "outcomes": {t: [p.positives.get(t, 0), n] for t, n in p.examples.items()},
            "scores": dict(p.scores),
            "traits": dict(p.traits),
            "segments": list(p.segments),
            "aliases": list(p.aliases),
            "recent": self.risk.recent(p),
            "risk": {**self.risk.velocity(p, at), "anomaly": p.anomaly},
            "behaviour": self.behaviour.view(p, at),
        }


#: lifecycle stages by days since the last event (and since the first, for "new")
NEW_DAYS, ACTIVE_DAYS, AT_RISK_DAYS = 14.0, 30.0, 90.0


def lifecycle(p: Profile, at: float) -> str:
    """``new``, ``active``, ``at_risk`` or ``lapsed``, from event time alone.

    >>> p = Profile("u", anchor=0.0, first_ts=0.0, last_ts=0.0, n=1)
    >>> [lifecycle(p, days * DAY) for days in (1, 20, 60, 200)]
    ['new', 'active', 'at_risk', 'lapsed']
    """
    idle = (at - p.last_ts) / DAY
    if idle > AT_RISK_DAYS:
        return "lapsed"
    if idle > ACTIVE_DAYS:
        return "at_risk"
    return "new" if (at - p.first_ts) / DAY <= NEW_DAYS else "active"


#: compact, versioned bytes: one schema byte, then the profile as a MessagePack array
_codec = VersionedCodec(Profile, schema=PROFILE_SCHEMA, what="profile")
#: profiles written before the behaviour maps: the same fields up to ``anonymous``
_codec_v1 = VersionedCodec(Profile, schema=1, what="profile")
encode_profile = _codec.encode


def decode_profile(blob: bytes, key: str | None = None) -> Profile:
    """A profile from its bytes, of this schema or the one before it (no behaviour kept yet);
    any other schema is refused with a :class:`~liveprofile.errors.StateVersionError`.

    >>> old = _codec_v1.encode(Profile("u1", 0.0, 0.0, 0.0, n=3))
    >>> p = decode_profile(old, "u1")
    >>> p.n, p.behaviour_items, decode_profile(encode_profile(p)) == p
    (3, {}, True)
    >>> decode_profile(bytes([9]) + old[1:], "u1")
    Traceback (most recent call last):
    ...
    liveprofile.errors.StateVersionError: profile 'u1' has schema 09, this version reads 2: ...
    """
    if _codec_v1.accepts(blob):
        return _codec_v1.decode(blob, key)
    return _codec.decode(blob, key)

"""Properties of profiles: order independence, bounded interests, exact decay, rebasing, storage."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_step_by_hand import profile_after

from liveprofile.config import PipelineConfig, ProfileConfig
from liveprofile.engine.core import Core
from liveprofile.errors import StateVersionError
from liveprofile.events import Event
from liveprofile.profile.state import (
    PROFILE_SCHEMA,
    Profile,
    ProfileUpdater,
    decode_profile,
    encode_profile,
)

HOUR, DAY = 3600.0, 86400.0
YEAR = 365 * DAY
START = 1_704_067_200.0  # 2024-01-01T00:00:00Z, a day boundary
TYPES = ("view", "click", "cart", "purchase")
CATEGORIES = ("books", "music", "garden", "toys", "food")
TAGS = ("sale", "new", "books")  # "books" is also a category: its weights add up
TOP_K = 20  # more than categories and tags together, so nothing is evicted
#: decayed values below this are zero for any purpose. A rebase across more than 1,022 half-lives
#: multiplies by a subnormal factor, which keeps fewer bits; whatever went through one is below
#: 2**-510 (stored weights stay under 2**512 between rebases), so only such values lose precision.
TINY = 2.0**-500


@st.composite
def event_lists(draw: st.DrawFn, span: float = YEAR, max_size: int = 30) -> list[Event]:
    n = draw(st.integers(1, max_size))
    events = []
    for i in range(n):
        kind = draw(st.sampled_from(TYPES))
        ts = START + draw(st.floats(0.0, span, allow_nan=False, allow_infinity=False))
        category = draw(st.none() | st.sampled_from(CATEGORIES))
        tags = tuple(draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)))
        value = draw(st.none() | st.floats(0.0, 500.0, allow_nan=False).map(lambda v: round(v, 2)))
        events.append(Event(f"e{i}", "u1", kind, ts, f"i{i % 3}", category, tags, value))
    return events


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=TINY)


def assert_close_maps(a: dict[str, float], b: dict[str, float]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert close(a[key], b[key]), (key, a[key], b[key])


def summary(p: Profile) -> dict[str, Any]:
    return {
        "n": p.n,
        "counts": p.counts,
        "first_ts": p.first_ts,
        "last_ts": p.last_ts,
        "purchases": p.purchases,
        "last_purchase_ts": p.last_purchase_ts,
        "value_n": p.value_n,
        # recent events and velocity windows keep the newest of all events: exactly the same
        "recent": p.recent,
        "velocity": (p.v_events, p.v_purchases, p.v_items),
    }


HALF_LIVES = st.sampled_from([HOUR, DAY, 7 * DAY, 30 * DAY])


@settings(max_examples=60)
@given(events=event_lists(), data=st.data(), h_c=HALF_LIVES, h_i=HALF_LIVES)
def test_any_order_gives_the_same_profile(
    events: list[Event], data: st.DataObject, h_c: float, h_i: float
) -> None:
    profile = ProfileConfig(counters_half_life=h_c, interests_half_life=h_i, top_k=TOP_K)
    shuffled = data.draw(st.permutations(events))
    updater, a = profile_after(events, profile=profile)
    _, b = profile_after(shuffled, profile=profile)
    at = max(e.ts for e in events)
    assert summary(a) == summary(b)
    assert a.last_ts == at and a.first_ts == min(e.ts for e in events)
    assert close(a.monetary, b.monetary)
    assert close(a.value_sum, b.value_sum)
    for later in (at, at + 3 * DAY):
        assert_close_maps(updater.decayed_counts(a, later), updater.decayed_counts(b, later))
        assert_close_maps(updater.interests_at(a, later), updater.interests_at(b, later))
    va, vb = updater.view(a), updater.view(b)
    same = ("frequency", "events", "counts", "first_seen", "last_seen", "recency_days")
    for key in (*same, "recent", "risk"):
        assert va[key] == vb[key]
    assert va["frequency"] == sum(e.type == "purchase" for e in events)
    assert va["counts"] == {t: sum(e.type == t for e in events) for t in set(va["counts"])}


@settings(max_examples=60)
@given(events=event_lists(max_size=60), top_k=st.integers(1, 4))
def test_top_k_bounds_the_interests(events: list[Event], top_k: int) -> None:
    many = [
        Event(e.event_id, e.user, e.type, e.ts, e.item_id, f"c{i % 11}", e.tags, e.value)
        for i, e in enumerate(events)
    ]
    core = Core(PipelineConfig(profile=ProfileConfig(top_k=top_k)))
    updater, state = core.updater, core.new_state()
    for e in many:  # a batch an event: the interests after each
        core.step(state, [e])
        p = state.profiles["u1"]
        assert len(p.interests) <= top_k
        assert len(updater.interests_at(p, p.last_ts)) <= top_k
    distinct = {t for e in many for t in e.topics()}
    assert len(p.interests) == min(top_k, len(distinct))


def test_top_k_keeps_the_strongest() -> None:
    events = [
        Event(f"e{i}", "u1", kind, START, category=category)
        for i, (kind, category) in enumerate(
            [("purchase", "a"), ("view", "b"), ("cart", "c"), ("view", "d"), ("purchase", "b")]
        )
    ]
    updater, p = profile_after(events, profile=ProfileConfig(top_k=2))
    # b's first view (1) was the weakest when c came and was evicted; its purchase (5) then
    # displaced c (3)
    assert updater.interests_at(p, START) == {"a": 5.0, "b": 5.0}


def test_decayed_value_halves_after_one_half_life() -> None:
    profile = ProfileConfig(counters_half_life="7d", interests_half_life="30d", top_k=TOP_K)
    events = [Event("e1", "u1", "purchase", START, "i1", "books", value=10.0)]
    updater, p = profile_after(events, profile=profile)
    assert updater.decayed_counts(p, START) == {"purchase": 1.0}
    assert updater.decayed_counts(p, START + 7 * DAY) == {"purchase": 0.5}
    assert updater.decayed_counts(p, START + 14 * DAY) == {"purchase": 0.25}
    assert updater.interests_at(p, START) == {"books": 5.0}
    assert updater.interests_at(p, START + 30 * DAY) == {"books": 2.5}
    view = updater.view(p, at=START + 60 * DAY)
    assert view["interests"] == {"books": 1.25}
    assert view["decayed_counts"] == {"purchase": round(2.0 ** (-60 / 7), 6)}


@given(hour=st.integers(0, 23), k=st.integers(0, 60), weight=st.sampled_from(TYPES))
def test_halving_is_exact_at_any_time_of_day(hour: int, k: int, weight: str) -> None:
    profile = ProfileConfig(counters_half_life="1h", interests_half_life="1h", top_k=TOP_K)
    ts = START + hour * HOUR
    updater, p = profile_after([Event("e1", "u1", weight, ts, category="books")], profile=profile)
    w = updater.config.weights[weight]
    for j in range(k + 1):
        at = ts + j * HOUR
        assert updater.decayed_counts(p, at) == {weight: 2.0**-j}
        assert updater.interests_at(p, at) == {"books": w * 2.0**-j}


def _direct(events: list[Event], at: float, h_c: float, h_i: float, weights: dict[str, float]):
    counts: dict[str, float] = defaultdict(float)
    interests: dict[str, float] = defaultdict(float)
    for e in events:
        counts[e.type] += 2.0 ** (-(at - e.ts) / h_c)
        for topic in e.topics():
            interests[topic] += weights[e.type] * 2.0 ** (-(at - e.ts) / h_i)
    return dict(counts), dict(interests)


@settings(max_examples=60)
@given(events=event_lists(span=2 * YEAR, max_size=40), data=st.data())
def test_rebasing_keeps_values_finite_and_exact(events: list[Event], data: st.DataObject) -> None:
    config = ProfileConfig(counters_half_life="1h", interests_half_life="2h", top_k=TOP_K)
    order = data.draw(st.sampled_from(["time", "given", "shuffled"]))
    if order == "time":
        events = sorted(events, key=lambda e: e.ts)
    elif order == "shuffled":
        events = data.draw(st.permutations(events))
    updater, p = profile_after(events, profile=config)
    stored = [*p.decayed.values(), *p.interests.values()]
    assert all(math.isfinite(v) and v >= 0.0 for v in stored)
    at = p.last_ts
    counts, interests = _direct(events, at, HOUR, 2 * HOUR, dict(config.weights))
    assert_close_maps(updater.decayed_counts(p, at), counts)
    assert_close_maps(updater.interests_at(p, at), interests)
    view = updater.view(p)
    assert all(math.isfinite(v) for v in view["decayed_counts"].values())


def test_rebasing_over_two_years_moves_the_anchor() -> None:
    events = [
        Event(f"e{i}", "u1", "view", START + i * 5 * DAY + 7 * HOUR, category="books")
        for i in range(146)  # two years, 120 half-lives per step
    ]
    profile = ProfileConfig(counters_half_life="1h", interests_half_life="1h")
    updater, p = profile_after(events, profile=profile)
    # the landmark moved to a day within 512 half-lives of the last event
    assert events[-1].ts - 512 * HOUR - DAY < p.anchor <= events[-1].ts
    at = events[-1].ts
    counts, interests = _direct(events, at, HOUR, HOUR, dict(updater.config.weights))
    assert_close_maps(updater.decayed_counts(p, at), counts)
    assert_close_maps(updater.interests_at(p, at), interests)
    assert updater.decayed_counts(p, at)["view"] == pytest.approx(1.0, rel=1e-9)


def test_short_half_life_late_in_the_day() -> None:
    profile = ProfileConfig(counters_half_life="1m", interests_half_life="1m")
    ts = START + 23 * HOUR
    updater, p = profile_after([Event("e1", "u1", "view", ts, category="books")], profile=profile)
    assert updater.decayed_counts(p, ts) == {"view": pytest.approx(1.0)}


@settings(max_examples=60)
@given(events=event_lists(max_size=20))
def test_encode_decode_round_trip(events: list[Event]) -> None:
    updater, p = profile_after(events, profile=ProfileConfig(top_k=TOP_K))
    p.record_outcome("like", True)
    p.record_outcome("like", False)
    p.scores["like"] = 0.25
    p.traits = {"big": True, "tier": "gold", "ratio": 1.5}
    blob = encode_profile(p)
    assert blob[0] == PROFILE_SCHEMA
    again = decode_profile(blob)
    assert again == p
    assert encode_profile(again) == blob
    assert updater.view(again) == updater.view(p)


@pytest.mark.parametrize("schema", [b"", b"\x00", b"\x03", b"\xff"])
def test_decode_refuses_another_schema(schema: bytes) -> None:
    p = ProfileUpdater(ProfileConfig()).new("u1", START)
    body = encode_profile(p)[1:] if schema else b""
    with pytest.raises(StateVersionError, match="schema"):
        decode_profile(schema + body)

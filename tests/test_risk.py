"""Risk signals: recent events, velocity counts against brute force, the anomaly detector's
signal, save/load and restart, rules over velocity and anomaly, and what it all costs in bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_step_by_hand import profile_after

from liveprofile.config import (
    FeatureConfig,
    LearnerConfig,
    PipelineConfig,
    ProfileConfig,
    RiskConfig,
    RunConfig,
)
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.core import Core
from liveprofile.engine.halfspace import score_and_learn
from liveprofile.engine.local import LocalRunner
from liveprofile.engine.state import PipelineState
from liveprofile.errors import ConfigError, StateVersionError
from liveprofile.events import Event, EventParser
from liveprofile.events.sources import Batch
from liveprofile.learn import dump_learner, make_learner
from liveprofile.profile.risk import FEATURES, AnomalyScorer
from liveprofile.profile.state import PROFILE_SCHEMA, decode_profile, encode_profile
from liveprofile.profile.traits import TraitEvaluator
from liveprofile.store import SQLiteStore

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
TYPES = ("view", "cart", "purchase")
ITEMS = ("i0", "i1", "i2", "i3", "i4", "i5", "i6")


@st.composite
def bursts(draw: st.DrawFn, max_size: int = 40) -> list[Event]:
    """Events of one user within a few hours, many sharing a timestamp, some without item."""
    n = draw(st.integers(1, max_size))
    grid = draw(st.sampled_from([1.0, 7.5, 60.0, 300.0]))  # coarse grids make ties
    events = []
    for i in range(n):
        ts = T0 + grid * draw(st.integers(0, int(3 * 3600 / grid)))
        kind = draw(st.sampled_from(TYPES))
        item = draw(st.none() | st.sampled_from(ITEMS))
        value = draw(st.none() | st.sampled_from([0.0, 1.5, 20.0]))
        events.append(Event(f"e{i}", "u1", kind, ts, item_id=item, value=value))
    return events


def windows_and_caps() -> st.SearchStrategy[RiskConfig]:
    return st.builds(
        RiskConfig,
        recent=st.integers(0, 6),
        events_window=st.sampled_from([1.0, 60.0, 600.0]),
        purchases_window=st.sampled_from([60.0, 3600.0]),
        items_window=st.sampled_from([60.0, 600.0, 7200.0]),
        cap=st.integers(1, 8),
    )


def brute_force(events: Sequence[Event], risk: RiskConfig, at: float) -> dict[str, int]:
    """The velocity counts straight from their definition: min(count in (at - w, at], cap)."""
    in_window = [e for e in events if at - risk.events_window_s < e.ts <= at]
    purchases = [e for e in events if at - risk.purchases_window_s < e.ts <= at]
    items = {e.item_id for e in events if at - risk.items_window_s < e.ts <= at and e.item_id}
    return {
        "events_per_min": min(len(in_window), risk.cap),
        "purchases_per_hour": min(sum(e.type == "purchase" for e in purchases), risk.cap),
        "distinct_items_10m": min(len(items), risk.cap),
    }


@settings(max_examples=150)
@given(events=bursts(), risk=windows_and_caps(), later=st.sampled_from([0.0, 30.0, 900.0]))
def test_velocity_counts_equal_brute_force(
    events: list[Event], risk: RiskConfig, later: float
) -> None:
    core = Core(PipelineConfig(risk=risk))
    updater, state = core.updater, core.new_state()
    for k, e in enumerate(events):  # a batch an event: the counts after each
        core.step(state, [e])
        p = state.profiles["u1"]
        seen = events[: k + 1]
        assert updater.risk.velocity(p) == brute_force(seen, risk, p.last_ts)
    at = p.last_ts + later
    assert updater.risk.velocity(p, at) == brute_force(events, risk, at)
    # what is kept is bounded by the cap whatever the stream
    assert sum(n for _, n in p.v_events) <= risk.cap
    assert sum(n for _, n in p.v_purchases) <= risk.cap
    assert sum(len(m) for _, m in p.v_items) <= risk.cap


@settings(max_examples=150)
@given(events=bursts(), risk=windows_and_caps(), data=st.data())
def test_risk_fields_do_not_depend_on_arrival_order(
    events: list[Event], risk: RiskConfig, data: st.DataObject
) -> None:
    updater, a = profile_after(events, risk=risk)
    _, b = profile_after(data.draw(st.permutations(events)), risk=risk)
    for field in ("recent", "v_events", "v_purchases", "v_items"):
        assert getattr(a, field) == getattr(b, field), field
    assert updater.view(a)["recent"] == updater.view(b)["recent"]
    assert updater.view(a)["risk"] == updater.view(b)["risk"]


@settings(max_examples=100)
@given(events=bursts(), size=st.integers(0, 6), data=st.data())
def test_recent_events_are_the_newest_newest_first(
    events: list[Event], size: int, data: st.DataObject
) -> None:
    updater, p = profile_after(data.draw(st.permutations(events)), risk=RiskConfig(recent=size))
    recent = updater.view(p)["recent"]
    assert len(recent) == min(size, len(events))
    times = [r["ts"] for r in recent]
    assert times == sorted(times, reverse=True)
    assert times == sorted((e.ts for e in events), reverse=True)[:size]
    for r in recent:
        assert {"ts", "type", "item_id", "value"} == set(r)
        assert any(
            (e.ts, e.type, e.item_id, e.value) == (r["ts"], r["type"], r["item_id"], r["value"])
            for e in events
        )


def test_an_out_of_order_event_takes_its_place_and_the_oldest_falls_off() -> None:
    risk = RiskConfig(recent=3)
    events = [
        Event(f"e{i}", "u1", "view", ts, item_id=f"i{i}")
        for i, ts in enumerate([T0, T0 + 10, T0 + 30])
    ]
    events.append(Event("late", "u1", "purchase", T0 + 20, item_id="x", value=9.5))
    updater, p = profile_after(events, risk=risk)
    assert updater.view(p)["recent"] == [
        {"ts": T0 + 30, "type": "view", "item_id": "i2", "value": None},
        {"ts": T0 + 20, "type": "purchase", "item_id": "x", "value": 9.5},
        {"ts": T0 + 10, "type": "view", "item_id": "i1", "value": None},
    ]
    older = Event("older", "u1", "view", T0 - 5)  # older than all three: not kept
    for size in (1, 4, 5):
        updater, p = profile_after([*events, older], size=size, risk=risk)
        assert [r["ts"] for r in updater.view(p)["recent"]] == [T0 + 30, T0 + 20, T0 + 10]


def test_counts_saturate_at_the_cap_and_fall_back_as_time_passes() -> None:
    # twelve purchases of distinct items within 55 seconds
    events = [Event(f"e{i}", "u1", "purchase", T0 + 5 * i, item_id=f"i{i}") for i in range(12)]
    updater, p = profile_after(events, risk=RiskConfig(cap=5))
    assert updater.risk.velocity(p) == {
        "events_per_min": 5,
        "purchases_per_hour": 5,
        "distinct_items_10m": 5,
    }
    at = T0 + 55 + 50  # a minute after T0 + 45: the events at 50 and 55 remain
    assert updater.risk.velocity(p, at)["events_per_min"] == 2
    assert updater.risk.velocity(p, T0 + 55 + 3600) == {
        "events_per_min": 0,
        "purchases_per_hour": 0,
        "distinct_items_10m": 0,
    }
    view = updater.view(p, at=T0 + 55 + 120)
    assert view["risk"] == {
        "events_per_min": 0,
        "purchases_per_hour": 5,
        "distinct_items_10m": 5,
        "anomaly": None,
    }


def test_purchases_are_the_monetary_types() -> None:
    events = [
        Event(f"e{i}", "u1", kind, T0 + i) for i, kind in enumerate(["purchase", "order", "order"])
    ]
    updater, p = profile_after(events, profile=ProfileConfig(monetary_types=["order"]))
    assert updater.risk.velocity(p)["purchases_per_hour"] == 2


# -- rules -------------------------------------------------------------------------------------


def test_rules_over_velocity_and_anomaly() -> None:
    rules = {
        "fast": "velocity.events_per_min > 3",
        "buying_spree": "velocity.purchases_per_hour >= 2 and velocity.distinct_items_10m >= 2",
        "odd": "anomaly > 0.8",
    }
    events = [Event(f"e{i}", "u1", "view", T0 + 10 * i, item_id="i1") for i in range(4)]
    updater, p = profile_after(events)
    traits = TraitEvaluator(rules, updater)
    traits.update(p)
    assert p.traits == {"fast": True, "buying_spree": False, "odd": False}
    events += [
        Event("p1", "u1", "purchase", T0 + 3000, item_id="i1"),
        Event("p2", "u1", "purchase", T0 + 3100, item_id="i2"),
    ]
    updater, p = profile_after(events)
    p.anomaly = 0.93
    traits.update(p)
    assert p.traits == {"fast": False, "buying_spree": True, "odd": True}
    with pytest.raises(ConfigError, match="velocity"):
        TraitEvaluator({"bad": "speed > 3"}, updater)


def test_risk_section_of_the_config() -> None:
    cfg = PipelineConfig.from_toml(
        '[risk]\nrecent = 5\nevents_window = "5m"\ncap = 64\nanomaly = true\n'
        'anomaly_types = ["purchase"]\n'
    )
    assert (cfg.risk.recent, cfg.risk.events_window_s, cfg.risk.cap) == (5, 300.0, 64)
    assert cfg.risk.anomaly and cfg.risk.anomaly_types == ["purchase"]
    assert PipelineConfig().risk.anomaly is False
    for bad in ("cap = 0", "recent = -1", 'items_window = "0s"', "height = 40", "speed = 1"):
        with pytest.raises(ConfigError):
            PipelineConfig.from_toml(f"[risk]\n{bad}\n")


# -- the anomaly detector ----------------------------------------------------------------------


def synthetic(users: int, days: int, seed: int) -> list[Event]:
    parser = EventParser()
    cfg = SyntheticConfig(users=users, items=80, days=days, seed=seed)
    return sorted((parser.parse_fields(e) for e in generate(cfg)), key=lambda e: e.ts)


def with_risk(**risk: object) -> PipelineConfig:
    return PipelineConfig(
        features=FeatureConfig(bits=12),
        run=RunConfig(batch_size=80, dedup_window=500),
        risk=msgspec.convert({"anomaly": True, **risk}, RiskConfig),
    )


@pytest.mark.parametrize("seed", [3, 11])
def test_a_planted_burst_scores_above_every_normal_user(seed: int) -> None:
    events = synthetic(users=60, days=10, seed=seed)
    end = events[-1].ts
    # a card tester: forty top-value purchases of different items two seconds apart
    burst = [
        Event(f"b{i}", "bot", "purchase", end - 120 + 2 * i, item_id=f"x{i}", value=499.0)
        for i in range(40)
    ]
    core = Core(with_risk())
    state = core.new_state()
    core.step(state, sorted(events + burst, key=lambda e: e.ts))
    normal = [p.anomaly for u, p in state.profiles.items() if u != "bot"]
    assert all(score is not None and 0.0 <= score <= 1.0 for score in normal)
    bot = state.profiles["bot"].anomaly
    assert bot is not None
    assert bot > max(s for s in normal if s is not None)
    assert core.updater.view(state.profiles["bot"])["risk"]["anomaly"] == bot


def test_only_the_configured_types_are_scored() -> None:
    events = synthetic(users=10, days=3, seed=1)
    core = Core(with_risk(anomaly_types=["purchase"], window_size=20))
    state = core.new_state()
    core.step(state, events)
    buyers = {e.user for e in events if e.type == "purchase"}
    assert buyers and set(state.profiles) != buyers
    for user, p in state.profiles.items():
        assert (p.anomaly is not None) == (user in buyers)


def test_saved_detector_gives_identical_scores() -> None:
    config = with_risk(window_size=50).risk
    # readings of events as the step makes them: six features in [0, 1], many repeated
    rng = np.random.default_rng(5)
    readings = np.round(rng.random((400, 6)) ** 3, 2)
    scorer = AnomalyScorer(config)
    score_and_learn(scorer, readings[:200])
    blob = scorer.dump()
    again = AnomalyScorer.load(config, blob)
    assert again.dump() == blob
    first = score_and_learn(scorer, readings[200:]).tolist()
    second = score_and_learn(again, readings[200:]).tolist()
    assert first == second and len(set(first)) > 10
    assert again.dump() == scorer.dump()


@pytest.mark.parametrize(
    ("window", "cuts", "seed"), [(10, [1, 7, 40], 0), (25, [0, 60], 1), (7, [13], 2)]
)
def test_compiled_trees_score_and_learn_as_river_does(
    window: int, cuts: list[int], seed: int
) -> None:
    """River's own ``score_one``/``learn_one`` event by event against the compiled trees run on
    batches cut anywhere (a restart from the stored detector at one cut), over many windows."""
    config = RiskConfig(anomaly=True, window_size=window, seed=seed)
    rng = np.random.default_rng(seed)
    readings = np.round(rng.random((150, 6)) ** 2, 2)  # ties with the thresholds' neighbours
    readings[::9] = readings[0]  # repeated events
    river = AnomalyScorer(config)
    want = []
    for row in readings.tolist():
        x = dict(zip(FEATURES, row, strict=True))
        want.append(float(river.detector.score_one(x)))
        river.detector.learn_one(x)
    ours = AnomalyScorer(config)
    got: list[float] = []
    for k, (lo, hi) in enumerate(zip([0, *cuts], [*cuts, len(readings)], strict=True)):
        got += score_and_learn(ours, readings[lo:hi]).tolist()
        if k == 1:
            ours = AnomalyScorer.load(config, ours.dump())
    assert got == want and len(set(got)) > 10
    assert ours.dump() == river.dump()


def test_a_stored_learner_is_not_a_detector() -> None:
    learner = dump_learner(make_learner(LearnerConfig(kind="hoeffding")))
    with pytest.raises(StateVersionError, match="HalfSpaceTrees"):
        AnomalyScorer.load(RiskConfig(anomaly=True), learner)


def _store_dump(store: SQLiteStore) -> dict[str, object]:
    rows = {ns: dict(store.scan(ns)) for ns in ("profile", "item", "pending")}
    meta = {name: store.get_meta(name) for name in ("risk/anomaly", "checkpoint", "population")}
    return {"rows": rows, "meta": meta}


def test_restart_continues_the_same_detector(tmp_path: Path) -> None:
    cfg = with_risk(window_size=60)
    events = synthetic(users=25, days=6, seed=4)
    batches = [
        Batch(events=events[i : i + 80], offset=min(i + 80, len(events)))
        for i in range(0, len(events), 80)
    ]
    assert len(batches) > 6

    clean = LocalRunner(cfg, SQLiteStore(tmp_path / "clean.db"), tmp_path / "clean.dead")
    for batch in batches:
        clean.process("src", batch)
    split = LocalRunner(cfg, SQLiteStore(tmp_path / "split.db"), tmp_path / "split.dead")
    for batch in batches[:4]:
        split.process("src", batch)
    split.close()
    store = SQLiteStore(tmp_path / "split.db")
    reloaded = PipelineState.load(store, cfg)
    assert reloaded.anomaly is not None
    assert reloaded.anomaly.dump() == store.get_meta("risk/anomaly")
    store.close()
    split = LocalRunner(cfg, SQLiteStore(tmp_path / "split.db"), tmp_path / "split.dead")
    for batch in batches[4:]:
        split.process("src", batch)
    got, expected = _store_dump(split.store), _store_dump(clean.store)
    assert expected["meta"]["risk/anomaly"] is not None  # type: ignore[index]
    assert got == expected
    scores = [decode_profile(b).anomaly for b in expected["rows"]["profile"].values()]  # type: ignore[index]
    assert len(set(scores)) > 5
    clean.close()
    split.close()


def test_scores_do_not_depend_on_batch_boundaries() -> None:
    cfg = with_risk(window_size=40)
    events = synthetic(users=15, days=4, seed=8)
    results = []
    for size in (1, 13, len(events)):
        core = Core(cfg)
        state = core.new_state()
        for start in range(0, len(events), size):
            core.step(state, events[start : start + size])
        assert state.anomaly is not None
        profiles = {u: encode_profile(p) for u, p in sorted(state.profiles.items())}
        results.append((profiles, state.anomaly.dump()))
    assert results[0] == results[1] == results[2]


# -- stored size -------------------------------------------------------------------------------


def test_profiles_from_before_the_risk_fields_still_load() -> None:
    updater, p = profile_after([Event("e1", "u1", "purchase", T0, item_id="i1", value=2.0)])
    fields = msgspec.msgpack.decode(encode_profile(p)[1:])
    # the struct without the five risk fields (and the anonymous flag and the behaviour maps,
    # added after them)
    old = bytes([PROFILE_SCHEMA]) + msgspec.msgpack.encode(fields[:-8])
    again = decode_profile(old)
    assert again.n == 1 and again.recent == [] and again.v_events == [] and again.anomaly is None
    assert updater.view(again)["risk"]["events_per_min"] == 0


def test_risk_fields_stay_small_in_the_worst_case() -> None:
    """Fractional times (9 bytes each), a new long item per event: every list at its cap."""
    risk = RiskConfig()
    events = [
        Event(f"e{i}", "u1", "purchase", T0 + 0.37 * i, item_id=f"sku-{i:012d}", value=9.99)
        for i in range(500)
    ]
    updater, p = profile_after(events, risk=risk)
    velocity = updater.risk.velocity(p)
    assert set(velocity.values()) == {risk.cap}
    assert len(p.recent) == risk.recent
    bare = msgspec.structs.replace(p, recent=[], v_events=[], v_purchases=[], v_items=[])
    added = len(encode_profile(p)) - len(encode_profile(bare))
    # 10 recent events of 45 bytes, 2 x 32 (time, count) pairs of 11 bytes and 32 items of
    # 16 bytes (one per time, here), and the lists' headers: 450 + 704 + 512 + 6
    assert added <= 1672


def test_velocity_can_be_switched_off() -> None:
    events = [
        Event(f"e{i}", "u", "purchase", float(i), item_id=f"i{i}", value=1.0) for i in range(5)
    ]
    updater, p = profile_after(events, "u", risk=RiskConfig(velocity=False, recent=3))
    assert updater.risk.velocity(p) == dict.fromkeys(
        ("events_per_min", "purchases_per_hour", "distinct_items_10m"), 0
    )
    assert (p.v_events, p.v_purchases, p.v_items) == ([], [], [])
    assert [r["ts"] for r in updater.risk.recent(p)] == [4.0, 3.0, 2.0]

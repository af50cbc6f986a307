"""Behaviour on the exposed item and category: kept per profile (bounded), shown in the profile
view, read by rules, folded by identity links, turned into features by the step, the same
whatever the batches."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from test_compiled import assert_same, chunks, config, messed_up, run, synthetic
from test_step_by_hand import profile_after

from liveprofile.config import (
    FeatureConfig,
    LabelConfig,
    PipelineConfig,
    ProfileConfig,
    RunConfig,
    TaskConfig,
)
from liveprofile.datasets.movielens import movielens_source
from liveprofile.engine.core import Core
from liveprofile.errors import StateVersionError
from liveprofile.events import Event
from liveprofile.features.hashing import FeatureBuilder
from liveprofile.profile.behaviour import B_CONVERTED, B_LAST, unpack
from liveprofile.profile.identity import merge_profiles
from liveprofile.profile.population import standing
from liveprofile.profile.segments import SegmentRules
from liveprofile.profile.state import (
    Profile,
    _codec_v1,
    decode_profile,
    encode_profile,
)

DAY = 86400.0


def view(user: str, kind: str, ts: float, item: str, category: str = "tea") -> Event:
    return Event(f"{user}-{kind}-{ts}-{item}", user, kind, ts, item_id=item, category=category)


#: a task learning from every event at once, so that the step logs the features of each
PROBE = TaskConfig(
    "probe",
    on=["view", "purchase", "rate"],
    label=LabelConfig(kind="type", positive=["cart"]),
)


def feature_names(
    events: list[Event], profile: ProfileConfig, features: FeatureConfig | None = None
) -> list[str]:
    """The names of the features the step builds for the last of ``events``, in order."""
    cfg = PipelineConfig(
        tasks=[PROBE],
        profile=profile,
        features=features or FeatureConfig(),
        run=RunConfig(training_log="examples"),
    )
    core = Core(cfg)
    out = core.step(core.new_state(), events)
    assert out.learned is not None
    idx = out.learned.columns["feature_idx"][-1]
    return [core.features.names.get(i, f"#{i}") for i in idx]


def test_counts_last_touch_and_conversion_per_item_and_category() -> None:
    events = [
        view("u", "view", 0.0, "i1"),
        view("u", "view", DAY, "i1"),
        view("u", "cart", DAY, "i2"),
        view("u", "purchase", 2 * DAY, "i2", "coffee"),
        view("u", "rate", 2 * DAY, "i3"),  # not a counted type: no entry
    ]
    updater, p = profile_after(events, "u", profile=ProfileConfig(counters_half_life="1d"))
    assert list(p.behaviour_items) == ["i1", "i2"]
    seen = updater.behaviour.view(p, 2 * DAY)
    assert seen["items"]["i1"] == {"last": DAY, "converted": False, "counts": {"view": 0.75}}
    assert seen["items"]["i2"]["converted"] and seen["items"]["i2"]["last"] == 2 * DAY
    assert seen["categories"]["tea"]["counts"] == {"view": 0.75, "cart": 0.5}
    assert seen["categories"]["coffee"] == {
        "last": 2 * DAY,
        "converted": True,
        "counts": {"purchase": 1.0},
    }
    assert list(seen["items"]) == ["i2", "i1"]  # most recently touched first
    assert updater.view(p)["behaviour"] == seen


def test_the_most_recent_keys_stay_and_a_rebase_changes_no_value() -> None:
    profile = ProfileConfig(behaviour_keys=4, counters_half_life="1d")
    events = [view("u", "view", k * DAY, f"i{k}") for k in range(5)]  # room 4, trimmed past 5
    updater, p = profile_after(events, "u", profile=profile)
    assert len(p.behaviour_items) == 5
    events.append(view("u", "view", 10 * DAY, "i0"))  # i0 touched again: stays
    events.append(view("u", "view", 11 * DAY, "i9"))
    updater, p = profile_after(events, "u", profile=profile)
    # the two least recent (i1, i2) dropped, the others in the order they were added
    assert list(p.behaviour_items) == ["i0", "i3", "i4", "i9"]
    assert list(updater.behaviour.view(p, 11 * DAY)["items"]) == ["i9", "i0", "i4", "i3"]
    before = updater.behaviour.view(p, 400 * DAY)
    updater.rebase(p, 300 * DAY)
    after = updater.behaviour.view(p, 400 * DAY)
    for key, entry in before["items"].items():
        assert after["items"][key]["last"] == entry["last"]
        assert after["items"][key]["counts"] == pytest.approx(entry["counts"])


def test_an_identity_link_folds_behaviour_and_an_erasure_removes_it() -> None:
    profile = ProfileConfig(behaviour_keys=2, counters_half_life="1d")
    visits = [view("a", "view", 0.0, "i1"), view("a", "purchase", DAY, "i2")]
    updater, anon = profile_after(visits, "a", profile=profile)
    visits = [view("u", "view", 3 * DAY, "i1"), view("u", "view", 2.5 * DAY, "i3")]
    _, known = profile_after(visits, "u", profile=profile)
    merge_profiles(updater, known, anon)
    items = known.behaviour_items
    assert list(items) == ["i1", "i3"]  # three keys past the room of two: the latest stay
    i1 = unpack(items["i1"])
    # the visitor's view on day 0 and the user's on day 3, counted as of day 3 (the stored
    # counts are relative to the anchor, which the step sets at each profile's first event)
    assert i1[B_LAST] == 3 * DAY
    assert updater.behaviour.view(known, 3 * DAY)["items"]["i1"]["counts"] == {"view": 1.0 + 1 / 8}
    assert unpack(known.behaviour_categories["tea"])[B_CONVERTED] == 1.0
    # on the compiled step: a visitor's behaviour moves to the user at login, and is erased
    core = Core(PipelineConfig())
    assert core.compiled is not None
    state = core.new_state()
    visit = [
        Event("v1", "anon", "view", 0.0, item_id="i1", category="tea", anonymous_id="anon"),
        Event("v2", "u1", "purchase", 60.0, item_id="i1", category="tea", anonymous_id="anon"),
    ]
    core.step(state, visit)
    p = state.profiles["u1"]
    i1 = unpack(p.behaviour_items["i1"])
    assert i1[B_CONVERTED] == 1.0 and sum(i1[2:]) > 1
    core.step(state, [Event("f", "u1", "$forget", 120.0)])
    assert "u1" not in state.profiles and "anon" not in state.profiles


def test_rules_read_behaviour_and_missing_keys_read_as_never() -> None:
    events = [view("u", "view", 0.0, "i1"), view("u", "purchase", DAY, "i2")]
    updater, p = profile_after(events[:1], "u")
    rules = SegmentRules(
        {
            "tea_buyer": "category_behaviour['tea'].converted",
            "viewed_i1": "item_behaviour['i1'].view > 0.9 and item_behaviour['i1'].days_since < 1",
            "coffee_lately": "category_behaviour['coffee'].days_since < 30",
        },
        updater,
    )
    assert rules.memberships(p, at=3600.0) == ["viewed_i1"]
    _, p = profile_after(events, "u")
    assert rules.memberships(p, at=2 * DAY) == ["tea_buyer"]
    assert rules.time_dependent


def test_features_name_the_state_time_and_counts_and_can_be_turned_off() -> None:
    cfg = ProfileConfig()
    events = [
        view("u", "view", 0.0, "i1"),
        view("u", "purchase", 0.0, "i1"),
        view("u", "view", 3 * 3600.0, "i1", "coffee"),
    ]
    names = feature_names(events, cfg)
    behaviour = [n for n in names if n.startswith("b_")]
    # i1: converted, 3 hours ago (bucket 2), a view and a purchase decayed a little (the
    # types it never had add no feature); coffee: never touched
    assert behaviour == [
        "b_item_state=1",
        "b_item_ago=2",
        "b_item=view=2",
        "b_item=purchase=2",
        "b_category_state=2",
    ]
    off = feature_names(events, cfg, FeatureConfig(behaviour=False))
    assert not [n for n in off if n.startswith("b_")]
    assert off == [n for n in names if not n.startswith("b_")]
    none, q = profile_after(
        [view("u", "view", 0.0, "i1")], "u", profile=ProfileConfig(behaviour_keys=0)
    )
    assert q.behaviour_items == {} and not FeatureBuilder(FeatureConfig(), none).behaviour_tables


def test_profiles_of_the_former_schema_read_with_no_behaviour() -> None:
    p = Profile("u", 0.0, 0.0, 5.0, n=2, counts={"view": 2})
    old = _codec_v1.encode(p)
    assert decode_profile(old, "u") == p and decode_profile(old).behaviour_items == {}
    assert encode_profile(p)[0] == 2
    with pytest.raises(StateVersionError, match="profile 'u' has schema 07, this version reads 2"):
        decode_profile(bytes([7]) + old[1:], "u")


@pytest.mark.parametrize("size", [1, 37, 100_000])
def test_the_compiled_step_keeps_the_same_behaviour_to_the_byte(size: int) -> None:
    # little room (trimmed often), a type the shop rarely has, and ratings counted
    events = messed_up(synthetic(seed=12), seed=13)
    profile = ProfileConfig(
        top_k=4, outcome_keys=3, behaviour_keys=2, behaviour_types=["rate", "view", "purchase"]
    )
    # every batch commits whole models: one-event batches get a shorter stream
    stream = events[:500] if size == 1 else events
    assert_same(chunks(stream, size), profile=profile)
    store, _ = run(config(profile=profile), chunks(stream, size))
    profiles = [decode_profile(blob) for _, blob in store.scan("profile")]
    assert all(len(p.behaviour_items) <= 2 + 2 // 4 for p in profiles)
    assert any(p.behaviour_items for p in profiles) and any(
        unpack(e)[B_CONVERTED] for p in profiles for e in p.behaviour_categories.values()
    )
    assert all(len(unpack(e)) == 5 for p in profiles for e in p.behaviour_items.values())


def test_features_off_and_behaviour_off_give_the_same_state_on_both_steps() -> None:
    events = messed_up(synthetic(seed=14), seed=15)
    assert_same(chunks(events, 300), features=FeatureConfig(behaviour=False))
    assert_same(chunks(events, 300), profile=ProfileConfig(behaviour_keys=0))


def test_a_stored_profile_with_more_keys_than_the_room_loads_on_the_compiled_step() -> None:
    # room lowered since the profile was written: the compiled rows keep the most recent keys
    events = synthetic(seed=16, users=5, days=3)
    wide_cfg = config(profile=ProfileConfig(behaviour_keys=64))
    core = Core(wide_cfg)
    state = core.new_state()
    half = len(events) // 2
    core.step(state, events[:half])
    assert max(len(p.behaviour_items) for p in state.profiles.values()) > 4
    small = Core(msgspec.structs.replace(wide_cfg, profile=ProfileConfig(behaviour_keys=3)))
    assert small.compiled is not None
    small_state = small.new_state()
    small_state.profiles.update(state.profiles)
    for p in state.profiles.values():
        small_state.population.move(None, standing(p))
    small.step(small_state, events[half:])
    for user in {e.user for e in events[half:]}:
        assert len(small_state.profiles[user].behaviour_items) <= 3


def test_movielens_can_read_its_first_genre_as_the_category(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n1,A,Adventure|Comedy|Fantasy\n2,B,Drama\n3,C,(no genres listed)\n"
    )
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,10\n1,2,3.5,20\n1,3,5.0,30\n"
    )
    plain = next(movielens_source(tmp_path / "ratings.csv").batches(0, 10)).events
    first = next(
        movielens_source(tmp_path / "ratings.csv", first_genre_category=True).batches(0, 10)
    ).events
    assert [(e.category, e.tags) for e in first] == [
        ("Adventure", ("Comedy", "Fantasy")),
        ("Drama", ()),
        (None, ()),
    ]
    # the same topics either way: only the behaviour maps see a difference
    assert [e.topics() for e in first] == [e.topics() for e in plain]
    assert plain[0].category is None


def test_the_mean_value_per_key_is_kept_read_and_made_a_feature() -> None:
    # ratings of two movies of one genre: the genre's mean rating, decay left out
    rated = [
        msgspec.structs.replace(view("u", "rate", ts, item, "drama"), value=rating)
        for ts, item, rating in ((0.0, "m1", 5.0), (DAY, "m2", 2.0), (DAY, "m3", None))
    ]
    profile = ProfileConfig(behaviour_types=["rate"], behaviour_value=True)
    updater, p = profile_after(rated, "u", profile=profile)
    seen = updater.behaviour.view(p, DAY)["categories"]["drama"]
    # the counts (half-life 7 days) weigh the day-0 rating 2**(-1/7); m3 counts, with no value
    assert seen["value"] == pytest.approx((5.0 * 2 ** (-1 / 7) + 2.0) / (2 ** (-1 / 7) + 2.0))
    assert updater.behaviour.view(p, DAY)["items"]["m1"]["value"] == 5.0
    assert updater.behaviour.fields(p, DAY, "behaviour_items")["m3"]["value"] == 0.0
    names = feature_names([*rated, view("u", "rate", 2 * DAY, "m4", "drama")], updater.config)
    assert "b_category_value=13" in names  # a mean of 2.25: eight buckets a doubling of 1 + x
    plain = ProfileConfig(behaviour_types=["rate"])
    _, q = profile_after([view("u", "rate", 0.0, "m1", "drama")], "u", profile=plain)
    assert len(unpack(q.behaviour_items["m1"])) == 3  # no value column unless asked


def test_the_compiled_step_keeps_the_same_value_sums_to_the_byte() -> None:
    events = messed_up(synthetic(seed=16), seed=17)  # ratings with and without a value
    profile = ProfileConfig(
        behaviour_keys=3, behaviour_types=["rate", "view", "purchase"], behaviour_value=True
    )
    assert_same(chunks(events, 41), profile=profile)
    store, _ = run(config(profile=profile), chunks(events, 41))
    profiles = [decode_profile(blob) for _, blob in store.scan("profile")]
    sums = [unpack(e)[5] for p in profiles for e in p.behaviour_categories.values()]
    assert any(s > 0 for s in sums)
    assert all(len(unpack(e)) == 6 for p in profiles for e in p.behaviour_items.values())

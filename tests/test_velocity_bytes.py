"""Velocity lists counted as the MessagePack a profile's row holds for them
(:mod:`liveprofile.engine.velocitybytes`) and held as those bytes by the profiles
(:meth:`liveprofile.engine.lazyprofiles.ProfileMap.hold_velocity`): the same bytes as msgspec
writes, the same counts as counting list by list, the same stored state whatever the
batches, across restarts and whatever reads the profiles."""

from __future__ import annotations

import msgspec
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compiled import as_columns, assert_same, chunks, messed_up, snapshot, synthetic

from liveprofile.config import PipelineConfig, RiskConfig, RunConfig
from liveprofile.engine.core import Core
from liveprofile.engine.lazyprofiles import ProfileMap, peek
from liveprofile.engine.local import apply_batch
from liveprofile.engine.state import PipelineState
from liveprofile.engine.velocity import _NO_READS, _run, count_lists
from liveprofile.engine.velocitybytes import (
    decode_lists,
    decode_one,
    encode_lists,
    read_lists,
    write_lists,
)
from liveprofile.engine.velocitymerge import merge_rows
from liveprofile.events.sources import Batch
from liveprofile.profile.risk import RiskTracker, stamp
from liveprofile.profile.state import Profile, encode_profile
from liveprofile.store import MemoryStore

_time = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(-1e12, 1e12, allow_nan=False).map(stamp),
)
_counts = st.lists(st.tuples(_time, st.integers(1, 2**33)), max_size=6)
_groups = st.lists(
    st.tuples(_time, st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4)), max_size=5
).map(lambda gs: [(t, items) for t, items in dict(gs).items()])  # a time once


@given(st.lists(st.tuples(_counts, _counts, _groups), min_size=1, max_size=6))
def test_lists_read_and_written_back_are_the_bytes_msgspec_writes(users: list) -> None:
    parts = [encode_lists(lists) for lists in users]
    starts = np.cumsum([0] + [len(p) for p in parts])[:-1]
    times, values, lens = read_lists(b"".join(parts), starts, cap=3)
    blob, offsets = write_lists(times, values, lens)
    assert blob == msgspec.msgpack.encode(users)
    for j, part in enumerate(parts):
        assert blob[offsets[j, 0] - 1 : offsets[j, 3]] == part
        for k, name in enumerate(("events", "purchases", "items")):
            field = blob[offsets[j, k] : offsets[j, k + 1]]
            assert field == msgspec.msgpack.encode(users[j][k]), name
    assert decode_lists(blob) == [decode_one(p) for p in parts]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # user
            st.floats(0, 7200).map(lambda t: round(t, 1)),
            st.booleans(),  # monetary
            st.one_of(st.just(-1), st.integers(0, 5)),  # item
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 6),
)
def test_counting_through_bytes_gives_the_lists_of_counting_list_by_list(
    events: list, cap: int
) -> None:
    config = RiskConfig(
        velocity=True, events_window="1m", purchases_window="1h", items_window="10m", cap=cap
    )
    tracker = RiskTracker(config)
    users = sorted({u for u, *_ in events})
    slot = [users.index(u) for u, *_ in events]
    ts = [t for _, t, _, _ in events]
    monetary = [m for _, _, m, _ in events]
    items = [i for *_, i in events]
    half = len(events) // 2
    # the reference: lists counted half, then the rest, as two batches would
    last, n = np.zeros(len(users)), np.zeros(len(users), np.int64)
    lists = count_lists(tracker, [([], [], [])] * len(users), slot[:half], ts[:half],
                        monetary[:half], items[:half], last, n)  # fmt: skip
    expected = count_lists(tracker, lists, slot[half:], ts[half:], monetary[half:],
                           items[half:], last.copy(), n.copy())  # fmt: skip
    # through the bytes of the first half's lists
    parts = [encode_lists(x) for x in lists]
    starts = np.cumsum([0] + [len(p) for p in parts])[:-1]
    times, values, lens = read_lists(b"".join(parts), starts, tracker.cap)
    later = (
        np.array(slot[half:], np.int64), np.array(ts[half:], np.float64),
        np.array(monetary[half:], np.bool_), np.array(items[half:], np.int64),
    )  # fmt: skip
    params = (np.array(tracker.windows, np.float64), tracker.cap, True)
    _run(later, (last, n), (times, values, lens), params, _NO_READS)
    blob, _ = write_lists(times, values, lens)
    assert decode_lists(blob) == [tuple(x) for x in expected]
    assert blob == msgspec.msgpack.encode(expected)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),  # the user's or the visitor's
            st.floats(0, 7200).map(lambda t: round(t, 1)),
            st.booleans(),  # monetary
            st.one_of(st.just(-1), st.integers(0, 5)),  # item
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 6),
    st.booleans(),
)
def test_lists_merged_on_their_bytes_are_the_lists_merge_counts_gives(
    events: list, cap: int, held: bool
) -> None:
    config = RiskConfig(
        velocity=True, events_window="1m", purchases_window="1h", items_window="10m", cap=cap
    )
    tracker = RiskTracker(config)
    slot = [int(visitor) for visitor, *_ in events]
    ts = [t for _, t, _, _ in events]
    last = np.zeros(2)
    lists = count_lists(tracker, [([], [], [])] * 2, slot, ts, [m for _, _, m, _ in events],
                        [i for *_, i in events], last)  # fmt: skip
    at = float(last.max())
    into, other = (Profile(u, 0.0, 0.0, at) for u in ("u", "a"))
    for p, (v_events, v_purchases, v_items) in zip((into, other), lists, strict=True):
        p.v_events, p.v_purchases, p.v_items = v_events, v_purchases, v_items
    profiles = ProfileMap(u=msgspec.structs.replace(into), a=msgspec.structs.replace(other))
    if held:  # the user's lists as the bytes a batch left them
        for u, p in (("u", into), ("a", other)):
            row = encode_lists((p.v_events, p.v_purchases, p.v_items))
            starts = [1]
            for field in (p.v_events, p.v_purchases, p.v_items):
                starts.append(starts[-1] + len(msgspec.msgpack.encode(field)))
            profiles.hold_velocity(u, peek(profiles, u), row, starts)  # type: ignore[arg-type]
    merge_rows(tracker, profiles, "u", "a", at)
    assert profiles.holds_velocity("u")
    tracker.merge_counts(into, other, at)
    merged = profiles["u"]
    assert (merged.v_events, merged.v_purchases, merged.v_items) == (
        into.v_events, into.v_purchases, into.v_items,
    )  # fmt: skip


def _held(lists: tuple) -> tuple[ProfileMap, Profile, Profile]:
    whole = Profile("u", 0.0, 1.0, 1.0, n=1, counts={"view": 1})
    whole.v_events, whole.v_purchases, whole.v_items = lists
    row = encode_lists(lists)
    starts = [1]
    for field in lists:
        starts.append(starts[-1] + len(msgspec.msgpack.encode(field)))
    profiles = ProfileMap()
    profiles["u"] = slim = msgspec.structs.replace(whole, v_events=[], v_purchases=[])
    profiles.hold_velocity("u", slim, row, starts)
    return profiles, slim, whole


def test_held_velocity_lists_are_decoded_by_every_read() -> None:
    lists = ([(60, 2), (61.5, 1)], [(61.5, 1)], [(60, [7, 9]), (61.5, [3])])
    for read in (
        lambda m: m["u"],
        lambda m: m.get("u"),
        lambda m: m.pop("u"),
        lambda m: next(iter(m.values())),
        lambda m: m.copy()["u"],
        lambda m: m.setdefault("u", None),
    ):
        profiles, slim, whole = _held(lists)
        assert peek(profiles, "u").v_events == []  # type: ignore[union-attr]  # as held
        assert read(profiles) == whole
        assert slim.v_items == whole.v_items  # decoded in place
    profiles, slim, whole = _held(lists)
    assert profiles.velocity_rows(["u"], [slim]) == [encode_lists(lists)]
    view = profiles.view("u", ("v_events", "v_purchases", "v_items"))
    assert (view.v_events, view.v_purchases, view.v_items) == lists and slim.v_events == []
    profiles.settle_velocity(["u"])  # the caller wrote the lists: nothing to decode
    assert profiles["u"].v_events == []
    profiles, slim, whole = _held(lists)
    profiles["u"] = whole  # replaced: nothing held any more
    assert profiles.velocity_rows(["u"], [whole]) == [encode_lists(lists)]


def test_rows_of_profiles_with_held_kernel_fields_and_velocity_lists() -> None:
    cfg = PipelineConfig(run=RunConfig(dedup_window=500), risk=RiskConfig(velocity=True))
    store, core = MemoryStore(), Core(cfg)
    state = PipelineState.load(store, cfg)
    for k, batch in enumerate(chunks(synthetic(seed=40), 90)):
        apply_batch(core, state, store, "test", Batch(events=as_columns(batch), offset=k + 1))
    profiles = state.profiles
    assert isinstance(profiles, ProfileMap)
    held = [u for u in profiles if profiles.held(u)]
    assert held and all(peek(profiles, u).v_events == [] for u in held)  # type: ignore[union-attr]
    rows = dict(store.scan("profile"))
    for u in held:
        assert encode_profile(profiles[u]) == rows[u]  # decoded: what was committed
    assert any(profiles[u].v_events for u in held)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 10_000),
    st.integers(20, 140),
    st.sampled_from([0, 9, 10_000]),
    st.sampled_from(["1m", "1h"]),
    st.integers(2, 40),
)
def test_random_pipelines_with_held_lists_store_the_same_bytes_whatever_the_batches(
    seed: int, size: int, hot: int, window: str, cap: int
) -> None:
    events = messed_up(synthetic(seed=seed, users=30, days=3), seed=seed + 1)
    risk = RiskConfig(velocity=True, events_window=window, items_window=window, cap=cap)
    run = RunConfig(dedup_window=500, hot_profiles=hot)
    traits = {"busy": "velocity.events_per_min >= 2 or velocity.distinct_items_10m > 1"}
    assert_same(chunks(events, size), columns=True, risk=risk, run=run, traits=traits)
    assert_same(chunks(events, size), columns=True, risk=risk, run=run, traits={}, segments={})


def test_restarting_mid_stream_from_held_velocity_lists_changes_nothing() -> None:
    cfg = PipelineConfig(
        run=RunConfig(dedup_window=500, hot_profiles=25),
        risk=RiskConfig(velocity=True, events_window="1h", cap=4),
    )
    batches = chunks(messed_up(synthetic(seed=41), seed=42), 70)
    snapshots = []
    for restart in (None, len(batches) // 3, 2 * len(batches) // 3):
        store = MemoryStore()
        core, state = Core(cfg), PipelineState.load(store, cfg)
        for k, batch in enumerate(batches):
            if k == restart:
                profiles = state.profiles
                assert isinstance(profiles, ProfileMap)
                assert any(profiles.holds_velocity(u) for u in dict.keys(profiles))
                core, state = Core(cfg), PipelineState.load(store, cfg)
            apply_batch(core, state, store, "test", Batch(events=as_columns(batch), offset=k + 1))
        snapshots.append(snapshot(store, cfg))
    assert snapshots[0] == snapshots[1] == snapshots[2]

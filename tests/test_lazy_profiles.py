"""Profiles the step leaves with their kernel fields held as bytes
(:mod:`liveprofile.engine.lazyprofiles`): whole whenever read, the same stored bytes as profiles
kept whole (a plain dict of profiles, which the step never holds), and the same state when a
batch with logins, a restart or another step reads them afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from test_compiled import as_columns, assert_same, chunks, config, messed_up, snapshot, synthetic

from liveprofile.config import PipelineConfig, RiskConfig, RunConfig
from liveprofile.engine.core import Core
from liveprofile.engine.lazyprofiles import ProfileMap, peek
from liveprofile.engine.local import apply_batch
from liveprofile.engine.rowbytes import FIELDS
from liveprofile.engine.state import PipelineState
from liveprofile.events import Event
from liveprofile.events.sources import Batch
from liveprofile.profile.state import Profile, decode_profile, encode_profile
from liveprofile.store import MemoryStore

PLAIN = {"traits": {}, "segments": {}}  # nothing reads the profiles after the write-back


def stored(batches: Sequence[Sequence[Event]], held: bool, **changes: Any) -> dict[str, object]:
    """The stored state after ``batches`` given as columns, with profiles that may be held as
    bytes (``held``) or kept whole."""
    cfg = config(**changes)
    store, core = MemoryStore(), Core(cfg)
    state = PipelineState.load(store, cfg)
    if not held:
        state.profiles = {}
    offset = 0
    for batch in batches:
        offset += len(batch)
        apply_batch(core, state, store, "test", Batch(events=as_columns(batch), offset=offset))
    assert isinstance(state.profiles, ProfileMap) == held
    return snapshot(store, cfg)


def assert_held_like_whole(batches: Sequence[Sequence[Event]], **changes: Any) -> None:
    """Held profiles store the bytes of whole ones; and batches change nothing."""
    assert stored(batches, True, **changes) == stored(batches, False, **changes)
    assert_same(batches, columns=True, **changes)


def test_plain_batches_hold_profiles_and_store_the_bytes_of_whole_profiles() -> None:
    events = messed_up(synthetic(seed=21), seed=22)
    assert_held_like_whole(chunks(events, 70), **PLAIN)
    # velocity counts on too (they write the held profiles' lists)
    assert_held_like_whole(chunks(events, 70), risk=RiskConfig(velocity=True), **PLAIN)


def test_traits_and_segments_read_whole_profiles_and_the_rows_stay_the_same() -> None:
    events = messed_up(synthetic(seed=23), seed=24)
    assert_held_like_whole(chunks(events, 55))  # the default test config: both declared


def test_traits_of_held_profiles_read_the_fields_they_use() -> None:
    # traits that read every kernel field, on profiles that stay held (no segments)
    traits = {
        "viewer": "counts.view >= 2 and decayed.view > 1.5",
        "fan": "max(interest['fashion'], interest['books']) > 0.5",
        "spender": "monetary_30d > 20",
        "repeat": "category_behaviour['garden'].converted or item_behaviour['i00033'].view > 1",
        "busy": "velocity.events_per_min >= 2 and events > 3",
    }
    events = messed_up(synthetic(seed=30), seed=31)
    assert_held_like_whole(chunks(events, 65), traits=traits, segments={})
    assert_held_like_whole(chunks(events, 65), traits=traits, segments={}, risk=RiskConfig())


def test_held_profiles_are_decoded_when_read() -> None:
    cfg = PipelineConfig(run=RunConfig(dedup_window=500))
    store, core = MemoryStore(), Core(cfg)
    state = PipelineState.load(store, cfg)
    events = synthetic(seed=25)
    for k, batch in enumerate(chunks(events, 90)):
        apply_batch(core, state, store, "test", Batch(events=as_columns(batch), offset=k + 1))
    profiles = state.profiles
    assert isinstance(profiles, ProfileMap)
    held = [u for u in profiles if profiles.held(u)]
    assert held, "the last batch's users are held"
    user = held[0]
    slim = peek(profiles, user)
    assert slim is not None and slim.n > 0 and slim.counts == {}  # as held: not decoded
    stored = decode_profile(dict(store.scan("profile"))[user], user)
    assert dict(profiles)[user] == stored  # copying reads through: decoded
    assert not profiles.held(user) and slim.counts == stored.counts
    # every way of reading gives whole profiles, equal to the committed ones
    rows = dict(store.scan("profile"))
    for u, p in profiles.items():
        assert encode_profile(p) == rows[u]
    assert not any(profiles.held(u) for u in profiles)


def test_held_profiles_then_logins_then_another_step_give_the_same_state() -> None:
    # plain batches leave profiles held; a batch with logins (the Python lifecycle's stops)
    # and then another step (which lays their rows out again) read and change them
    plain = messed_up(synthetic(seed=26), seed=27)
    logins = synthetic(seed=26, logins=True)
    batches = [*chunks(plain[: len(plain) // 2], 80), *chunks(logins, 80)]
    assert_same(batches, **PLAIN)
    cfg = PipelineConfig(run=RunConfig(dedup_window=500))
    stores = []
    for switch in (True, False):
        store, core = MemoryStore(), Core(cfg)
        state = PipelineState.load(store, cfg)
        for k, batch in enumerate(chunks(plain, 80)):
            if switch and k == 6:  # from here on another step, on the held profiles
                assert any(state.profiles.held(u) for u in state.profiles)  # type: ignore[attr-defined]
                core.compiled.release()
                core = Core(cfg)
            apply_batch(core, state, store, "test", Batch(events=list(batch), offset=k + 1))
        stores.append(snapshot(store, cfg))
    assert stores[0] == stores[1]


def test_restarting_from_held_profiles_changes_nothing() -> None:
    cfg = PipelineConfig(run=RunConfig(dedup_window=500), risk=RiskConfig(velocity=True))
    batches = chunks(messed_up(synthetic(seed=28), seed=29), 60)
    snapshots = []
    for restart in (None, len(batches) // 2):
        store = MemoryStore()
        core, state = Core(cfg), PipelineState.load(store, cfg)
        for k, batch in enumerate(batches):
            if k == restart:
                core, state = Core(cfg), PipelineState.load(store, cfg)
            apply_batch(core, state, store, "test", Batch(events=as_columns(batch), offset=k + 1))
        snapshots.append(snapshot(store, cfg))
    assert snapshots[0] == snapshots[1]


def test_a_profile_map_reads_like_a_dict_of_whole_profiles() -> None:
    whole = Profile("u", 0.0, 1.0, 1.0, n=1, counts={"view": 1}, decayed={"view": 1.0})
    row = msgspec.msgpack.encode([getattr(whole, f) for f in FIELDS])
    starts = [1]
    for f in FIELDS:
        starts.append(starts[-1] + len(msgspec.msgpack.encode(getattr(whole, f))))
    for read in (
        lambda m: m["u"],
        lambda m: m.get("u"),
        lambda m: m.pop("u"),
        lambda m: next(iter(m.values())),
        lambda m: m.copy()["u"],
        lambda m: {**m}["u"],
        lambda m: m.setdefault("u", None),
    ):
        profiles = ProfileMap()
        profiles["u"] = slim = Profile("u", 0.0, 1.0, 1.0, n=1)
        profiles.hold("u", slim, row, starts)
        assert profiles == {"u": whole}  # compares whole profiles
        profiles.hold("u", slim, row, starts)
        assert read(profiles) == whole
    profiles = ProfileMap({"u": Profile("u", 0.0, 1.0, 1.0)})
    profiles.hold("u", profiles["u"], row, starts)
    del profiles["u"]
    assert not profiles.held("u") and "u" not in profiles and profiles.rows(["u"]) == {}


def held_after(batches: Sequence[Sequence[Event]], **changes: Any) -> list[bool]:
    """Whether each user of the last batch is still held after it."""
    cfg = config(**changes)
    store, core = MemoryStore(), Core(cfg)
    state = PipelineState.load(store, cfg)
    for k, batch in enumerate(batches):
        apply_batch(core, state, store, "test", Batch(events=as_columns(batch), offset=k + 1))
    profiles = state.profiles
    assert isinstance(profiles, ProfileMap)
    return [profiles.held(e.user) for e in batches[-1] if e.user in profiles]


#: rules over every kernel field, and over none (the profile's own scalars only)
EVERY_FIELD = {
    "viewer": "counts.view >= 2 and decayed.view > 1.5",
    "fan": "max(interest['fashion'], interest['books']) > 0.5",
    "spender": "monetary_30d > 20",
    "repeat": "category_behaviour['garden'].converted or item_behaviour['i00033'].view > 1",
    "busy": "velocity.events_per_min >= 2 and events > 3",
    "idle": "days_since_last_event > 1",
}
SCALARS = {"big": "monetary > 50 and frequency > 1", "long": "days_active > 2"}


def test_segments_of_held_profiles_read_the_fields_they_use() -> None:
    # segments that read every kernel field (a sweep each day), on profiles that stay held
    events = messed_up(synthetic(seed=32), seed=33)
    for risk in (RiskConfig(velocity=False), RiskConfig()):
        assert_held_like_whole(chunks(events, 65), traits={}, segments=EVERY_FIELD, risk=risk)
    # rules over no kernel field leave every profile held: nothing is decoded
    batches = chunks(synthetic(seed=34), 90)
    assert all(held_after(batches, traits={}, segments=SCALARS))
    assert all(held_after(batches, traits={}, segments={"idle": "days_since_last_event > 1"}))


def test_expiry_reads_only_the_last_event_time_of_held_profiles() -> None:
    # users expire (a TTL of a day and a half over six days) with their segments
    ttl = RunConfig(dedup_window=500, profile_ttl="36h")
    events = messed_up(synthetic(seed=35), seed=36)
    assert_held_like_whole(chunks(events, 60), run=ttl, **PLAIN)
    assert_held_like_whole(chunks(events, 60), run=ttl, traits={}, segments=SCALARS)
    # the expiry check and the last-seen index leave the batch's profiles held
    assert all(held_after(chunks(synthetic(seed=37), 90), run=ttl, **PLAIN))

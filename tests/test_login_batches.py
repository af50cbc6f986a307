"""Batches with identity links on the compiled path, wherever the batches end.

A batch with logins, merges or erasures runs the Python lifecycle at those events between the
kernel's stretches (``engine.links``); the rest of its work is the plain batch's: its profile
rows are spliced from the compiled writer's bytes (``engine.profilerows``) and the velocity
counts the stops left are counted in the compiled loop (``engine.velocity``). Whatever the
batch boundaries, each spliced row is ``encode_profile`` of its profile, and the profiles end
as one batch of every event leaves them.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compiled_lifecycle import assert_same, mixed

from liveprofile.config import PipelineConfig, RiskConfig, RunConfig
from liveprofile.engine.core import Core
from liveprofile.events import Event
from liveprofile.profile.state import encode_profile

EVENTS = mixed(seed=21)[:700]


def _split(events: list[Event], cuts: list[int]) -> list[list[Event]]:
    bounds = [0, *sorted({c % len(events) for c in cuts}), len(events)]
    return [events[a:b] for a, b in pairwise(bounds) if b > a]


def _profiles(
    batches: list[list[Event]], velocity: bool
) -> tuple[dict[str, dict[str, Any]], int, int]:
    """The profiles after the batches (decoded: a map's order is the order its keys came in),
    the rows spliced and the lifecycle's stops."""
    config = PipelineConfig(
        risk=RiskConfig(velocity=velocity, cap=4), run=RunConfig(dedup_window=500)
    )
    core = Core(config)
    state = core.new_state()
    spliced = 0
    for batch in batches:
        out = core.step(state, batch)
        assert set(out.profile_rows) <= out.users
        for user, row in out.profile_rows.items():
            assert row == encode_profile(state.profiles[user]), user
        spliced += len(out.profile_rows)
    stopped = core.compiled.stopped
    decoded = {u: msgspec.structs.asdict(p) for u, p in state.profiles.items()}
    return decoded, spliced, stopped


@settings(max_examples=12)
@given(cuts=st.lists(st.integers(0, 10_000), max_size=8), velocity=st.booleans())
def test_login_batches_splice_their_rows_and_match_one_batch(
    cuts: list[int], velocity: bool
) -> None:
    batches = _split(EVENTS, cuts)
    want, _, _ = _profiles([EVENTS], velocity)
    got, spliced, stopped = _profiles(batches, velocity)
    assert got == want
    assert stopped > 0, "the stream has logins, merges and erasures"
    assert spliced > 0, "batches with stops splice their rows too"


def test_a_batch_with_a_login_splices_the_rows_the_kernel_wrote() -> None:
    core = Core(PipelineConfig())
    state = core.new_state()
    core.step(state, EVENTS[:300])
    stopped = core.compiled.stopped
    visit = Event("a1", "anon-1", "view", 1.8e9, item_id="i1", anonymous_id="anon-1")
    login = Event("a2", "u-new", "purchase", 1.8e9 + 5, item_id="i1", anonymous_id="anon-1")
    later = Event("a3", "anon-1", "view", 1.8e9 + 9, item_id="i2", anonymous_id="anon-1")
    out = core.step(state, [visit, login, later])
    assert core.compiled.stopped == stopped + 1
    assert out.links == {"anon-1": "u-new"} and "anon-1" not in state.profiles
    p = state.profiles["u-new"]
    assert p.n == 3 and p.aliases == ["anon-1"] and len(p.v_events) > 0
    assert out.profile_rows["u-new"] == encode_profile(p)


def test_login_batches_with_velocity_give_the_same_stored_state() -> None:
    # the compiled velocity loop after the stops, through the runner and the store
    for size in (9, 130):
        core = assert_same([EVENTS[k : k + size] for k in range(0, len(EVENTS), size)])
        assert core.compiled.stopped > 0

"""The compiled step's write-back without re-encoding, and its velocity counts without Python.

* The kernel fields' bytes that the compiled writer makes are exactly what msgspec writes for
  the decoded values, so the profile rows spliced from them (``engine.profilerows``) equal
  ``encode_profile`` of the profiles (batches with identity links: ``test_login_batches``).
* ``engine.velocity`` counts a batch's events into the same lists, entry for entry, as
  ``RiskTracker.count`` event by event, whatever the order, ties, caps and windows.
"""

from __future__ import annotations

import random

import msgspec
import numpy as np
import pytest
from user_rows import names, random_rows

from liveprofile.config import PipelineConfig, RiskConfig
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.core import Core
from liveprofile.engine.rowbytes import FIELDS, row_fields_bytes
from liveprofile.engine.velocity import count_lists
from liveprofile.events.schema import Event, EventParser
from liveprofile.profile.risk import RiskTracker, velocity_item
from liveprofile.profile.state import Profile, encode_profile


def _events(users: int = 60, days: int = 4, seed: int = 5) -> list[Event]:
    parser = EventParser()
    raw = generate(SyntheticConfig(users=users, items=80, days=days, seed=seed))
    return [parser.parse_json(msgspec.json.encode(e)) for e in raw]


def test_field_bytes_are_what_msgspec_writes() -> None:
    rng = np.random.default_rng(1)
    # every width of negative integer msgspec picks: fixint, int8, int16, int32, int64
    negatives = np.array([-1, -32, -33, -128, -129, -32768, -32769, -(1 << 31), -(1 << 31) - 1])
    # empty, the largest fix form, 16-bit headers
    U = random_rows((0, 15, 16, 20), rng, outcomes=negatives, spend=70_000)
    kinds, topics, items = names()
    decoded, blob, offsets = row_fields_bytes(U, np.arange(4), kinds, topics, items)
    assert len(decoded) == 4 and offsets.shape == (4, len(FIELDS) + 1)
    for j, x in enumerate(decoded):
        for k, name in enumerate(FIELDS):
            part = blob[offsets[j, k] : offsets[j, k + 1]]
            assert part == msgspec.msgpack.encode(getattr(x, name)), (j, name)
    assert msgspec.msgpack.encode(decoded) == blob  # rows and fields back to back, nothing else


def test_spliced_profile_rows_equal_encoded_profiles() -> None:
    core = Core(PipelineConfig())
    assert core.compiled is not None
    state = core.new_state()
    events = _events()
    spliced = 0
    for start in range(0, len(events), 700):
        out = core.step(state, events[start : start + 700])
        assert out.profile_rows, "every plain batch writes its profiles' rows"
        assert set(out.profile_rows) <= out.users
        for user, row in out.profile_rows.items():
            assert row == encode_profile(state.profiles[user])
        spliced += len(out.profile_rows)
    assert spliced > len(state.profiles)


def _counted_one_by_one(
    tracker: RiskTracker, events: list[tuple[int, float, bool, int]], users: int
) -> list[tuple[object, object, object]]:
    profiles = [Profile(f"u{j}", 0.0, 0.0, 0.0) for j in range(users)]
    seen = [0] * users
    for user, ts, monetary, item in events:
        p = profiles[user]
        if seen[user] == 0 or ts > p.last_ts:
            p.last_ts = ts
        seen[user] += 1
        tracker.count(p, ts, monetary, None if item < 0 else item, p.last_ts)
    return [(p.v_events, p.v_purchases, p.v_items) for p in profiles]


@pytest.mark.parametrize("seed", range(12))
def test_compiled_velocity_counts_equal_counting_event_by_event(seed: int) -> None:
    rng = random.Random(seed)
    cap = rng.choice([1, 2, 3, 5, 32])
    config = RiskConfig(
        cap=cap,
        events_window=rng.choice(["5s", "1m"]),
        purchases_window=rng.choice(["10s", "1h"]),
        items_window=rng.choice(["7s", "10m"]),
    )
    tracker = RiskTracker(config)
    users = 4
    events = []
    t = 1_700_000_000.0
    for _ in range(300):
        t += rng.choice([0.0, 0.0, 0.5, 1.0, 3.0, 40.0])
        ts = t - rng.choice([0.0, 0.0, 0.0, 2.0, 30.5, 700.0])  # late events too
        item = rng.choice([-1, *(velocity_item(f"i{k}") for k in range(6))])
        events.append((rng.randrange(users), ts, rng.random() < 0.3, item))
    want = _counted_one_by_one(tracker, events, users)
    # in two batches: the second starts from the lists (and last times) the first left
    half = len(events) // 2
    last, n = np.zeros(users), np.zeros(users, np.int64)
    lists: list = [([], [], []) for _ in range(users)]
    for part in (events[:half], events[half:]):
        cols = list(zip(*part, strict=True))
        lists = count_lists(tracker, lists, cols[0], cols[1], cols[2], cols[3], last, n)
    assert lists == want
    assert msgspec.msgpack.encode(lists) == msgspec.msgpack.encode(want)  # ints stay ints


def test_the_steps_velocity_lists_do_not_depend_on_the_batches_out_of_order() -> None:
    events = _events(users=40, days=3, seed=9)
    rng = random.Random(3)
    for i in range(0, len(events) - 6, 5):  # some events late within their batch
        j = i + rng.randrange(5)
        events[i], events[j] = events[j], events[i]
    rows = []
    for size in (400, 37, 100_000):
        core = Core(PipelineConfig())
        state = core.new_state()
        for start in range(0, len(events), size):
            core.step(state, events[start : start + size])
        rows.append({u: (p.v_events, p.v_purchases, p.v_items) for u, p in state.profiles.items()})
    assert rows[0] == rows[1] == rows[2]
    assert any(v_events for v_events, _, _ in rows[0].values())

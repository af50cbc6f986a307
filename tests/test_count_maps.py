"""The examples and positives maps written in compiled code equal the dicts ``_counted`` made
from the old ones, key order included, on random histories."""

from __future__ import annotations

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compiled import as_columns, chunks, synthetic

from liveprofile.config import PipelineConfig, RunConfig
from liveprofile.engine import layout as L
from liveprofile.engine.core import Core
from liveprofile.engine.countmaps import KeyOrders, count_maps
from liveprofile.engine.local import apply_batch
from liveprofile.engine.records import Users
from liveprofile.engine.rowio import _counted
from liveprofile.engine.state import PipelineState
from liveprofile.events.sources import Batch
from liveprofile.profile.state import decode_profile
from liveprofile.store import MemoryStore

TASKS = ["repurchase", "like", "convert", "buy", "b"]


@st.composite
def a_row(draw: st.DrawFn) -> tuple[list[dict[str, int]], list[list[int]], list[list[int]]]:
    """A row's two old dicts (keys in a random order), its counts now (the old values or more,
    new tasks counted or not) and the ticks at which new counts became non-zero (-1: a row
    folded from another, its order left to the names)."""
    olds, counts, ticks = [], [], []
    for _ in L.COUNTS:
        keys = draw(st.permutations(TASKS).map(lambda p: p[: draw(st.integers(0, len(TASKS)))]))
        old = {k: draw(st.integers(0, 300)) for k in keys}
        count, tick = [], []
        for name in TASKS:
            grown = draw(st.integers(0, 70_000))
            count.append(old.get(name, 0) + grown if grown % 3 else old.get(name, 0))
            tick.append(draw(st.sampled_from([-1, 0, 1, 2, 7])))
        olds.append(old)
        counts.append(count)
        ticks.append(tick)
    return olds, counts, ticks


@settings(max_examples=150, deadline=None)
@given(st.lists(a_row(), min_size=1, max_size=6))
def test_count_maps_equal_the_dicts_counted_one_by_one(rows: list) -> None:
    U = Users.empty(len(rows), types=1, tasks=len(TASKS), top_k=1, room=1, recent=1)
    orders = KeyOrders(TASKS)
    codes = []
    for r, (olds, counts, ticks) in enumerate(rows):
        U.count[r] = counts
        U.first[r] = ticks
        codes.append([orders.code(old) for old in olds])
    maps = count_maps(U, np.arange(len(rows)), np.array(codes, np.int64), orders)
    for (olds, counts, ticks), x in zip(rows, maps, strict=True):
        for c, name in enumerate(L.COUNTS):
            want = _counted(olds[c], TASKS, counts[c], ticks[c])
            got = getattr(x, name)
            assert got == want and list(got) == list(want)
            assert msgspec.msgpack.encode(got) == msgspec.msgpack.encode(want)


def test_a_key_that_is_not_a_task_has_no_code() -> None:
    orders = KeyOrders(TASKS)
    assert orders.code({"like": 1, "gone": 2}) == -1
    assert orders.code({}) == 0 and orders.code({"like": 1, "b": 1}) == 1
    assert orders.code({"b": 1, "like": 1}) == 2  # another order, another code
    assert orders.code({"like": 3, "b": 9}) == 1


def test_a_dict_with_a_key_that_is_not_a_task_keeps_it_where_it_was() -> None:
    # e.g. a profile stored while another task was configured: its dicts are written back by
    # _counted, as before
    cfg = PipelineConfig(run=RunConfig(dedup_window=500))
    store, core = MemoryStore(), Core(cfg)
    state = PipelineState.load(store, cfg)
    *batches, last = chunks(synthetic(seed=41), 90)
    for k, batch in enumerate(batches):
        apply_batch(core, state, store, "test", Batch(events=as_columns(batch), offset=k + 1))
    user = next(e.user for e in last if e.user in state.profiles)
    p = state.profiles[user]
    p.examples = {"gone": 2, **p.examples}
    p.positives = {"gone": 1, **p.positives}
    n = p.n
    apply_batch(core, state, store, "test", Batch(events=as_columns(last), offset=len(batches) + 1))
    stored = decode_profile(dict(store.scan("profile"))[user], user)
    assert next(iter(stored.examples)) == "gone" and stored.examples["gone"] == 2
    assert next(iter(stored.positives)) == "gone" and stored.positives["gone"] == 1
    assert stored.n > n and len(stored.examples) > 1

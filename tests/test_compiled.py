"""The step's state does not depend on how the events are cut into batches, on the profile
rows kept between batches, or on events given as objects or as columns: the synthetic shop with
messy input (duplicates, late events, ratings), identity links and erasures, compared as the
state one batch of everything and (for short streams) one batch per event leave, where batch
boundaries may change nothing (``test_state_properties.batch_independent``).

What the step computes is pinned by hand-worked cases (``test_step_by_hand.py``) and the
property tests (``test_engine_properties.py``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from test_state_properties import _dump, batch_independent

from liveprofile.config import (
    LabelConfig,
    LearnerConfig,
    PipelineConfig,
    ProfileConfig,
    RiskConfig,
    RunConfig,
    TaskConfig,
)
from liveprofile.datasets.logins import with_logins
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.core import Core
from liveprofile.engine.local import apply_batch
from liveprofile.engine.state import PipelineState
from liveprofile.errors import ConfigError
from liveprofile.events import Event, EventParser
from liveprofile.events.columns import EventColumns
from liveprofile.events.sources import Batch
from liveprofile.profile.state import decode_profile
from liveprofile.store import MemoryStore, Store

NAMESPACES = ("profile", "item", "pending", "dedup")
META = ("checkpoint", "population")

TASKS = [
    TaskConfig("like", on=["rate"], label=LabelConfig(kind="value", threshold=4.0)),
    TaskConfig(
        "convert",
        on=["view"],
        label=LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="1d"),
    ),
    TaskConfig(
        "repurchase",
        on=["purchase"],
        label=LabelConfig(kind="delayed", conversion=["purchase"], key="category", window="2d"),
    ),
    TaskConfig(
        "carted",
        on=["view"],
        label=LabelConfig(kind="type", positive=["cart"]),
        learner=LearnerConfig(kind="ogd", params={"lr": 0.05}),
    ),
]


#: segment rules of time alone are evaluated as of each batch's watermark (by design): left out
#: where batchings are compared
SEGMENTS = {"buyers": "frequency > 2", "big": "monetary > 50"}


def config(**changes: object) -> PipelineConfig:
    base = PipelineConfig(
        tasks=TASKS,
        risk=RiskConfig(velocity=False),
        traits={"buyer": "frequency > 2"},
        segments={"active": "days_since_last_event < 2", "big": "monetary > 50"},
        run=RunConfig(dedup_window=500),
        profile=ProfileConfig(top_k=4, outcome_keys=3),
    )
    return msgspec.structs.replace(base, **changes) if changes else base


def synthetic(seed: int = 0, users: int = 80, days: int = 6, logins: bool = False) -> list[Event]:
    parser = EventParser()
    cfg = SyntheticConfig(users=users, items=60, categories=9, days=days, seed=seed)
    raw = with_logins(generate(cfg)) if logins else generate(cfg)
    return [parser.parse_fields(e) for e in raw]


def messed_up(events: list[Event], seed: int) -> list[Event]:
    """Duplicates, late events (some past a pending example's window) and ratings."""
    rnd = random.Random(seed)
    out = list(events)
    for k in range(0, len(events), 7):
        out.insert(rnd.randrange(len(out)), events[k])  # a re-sent event
    for k in range(0, len(events), 11):
        e = events[k]
        late = msgspec.structs.replace(
            e, event_id=f"late-{k}", ts=e.ts - rnd.choice([600, 3 * 86400])
        )
        out.insert(rnd.randrange(len(out)), late)
    for k in range(0, len(events), 5):
        e = events[k]
        if e.item_id is not None:
            value = rnd.choice([None, 1.0, 3.5, 4.0, 5.0])
            out.append(msgspec.structs.replace(e, event_id=f"rate-{k}", type="rate", value=value))
    out.sort(key=lambda e: e.ts + rnd.uniform(-4000, 4000))
    return out


def run(
    config: PipelineConfig, batches: Sequence[Sequence[Event]], columns: bool = False
) -> tuple[Store, Core]:
    store = MemoryStore()
    core = Core(config)
    state = PipelineState.load(store, config)
    offset = 0  # the source's offset: events so far, the same after any batching
    for events in batches:
        given = as_columns(events) if columns else list(events)
        offset += len(events)
        apply_batch(core, state, store, "test", Batch(events=given, offset=offset))
    return store, core


def as_columns(events: Sequence[Event]) -> EventColumns:
    """The events as a source that lays them out as columns gives them: no objects yet."""
    return dataclasses.replace(EventColumns.of(events), _events=None)


def snapshot(store: Store, config: PipelineConfig) -> dict[str, object]:
    rows = {ns: dict(store.scan(ns)) for ns in NAMESPACES}
    for name in config.segments:
        rows[f"segment:{name}"] = dict(store.scan(f"segment:{name}"))
    meta = {k: store.get_meta(k) for k in META}
    for task in config.tasks:
        meta[f"model/{task.name}"] = store.get_meta(f"model/{task.name}")
        meta[f"metrics/{task.name}"] = store.get_meta(f"metrics/{task.name}")
    return {"rows": rows, "meta": meta}


def chunks(events: list[Event], size: int) -> list[list[Event]]:
    return [events[k : k + size] for k in range(0, len(events), size)]


def comparable(store: Store, config: PipelineConfig) -> dict[str, Any]:
    """What batch boundaries may not change in ``store`` (see ``batch_independent``)."""
    return batch_independent(config, _dump(store, config, Path("/nonexistent/dead.jsonl")))


def assert_matches(
    cfg: PipelineConfig, store: Store, batches: Sequence[Sequence[Event]], singles: int = 400
) -> None:
    """``store``, where ``batches`` ran, holds the state the same events give in one batch and,
    when there are at most ``singles``, in one batch each (unless ``batches`` are that)."""
    got = comparable(store, cfg)
    assert got["rows"]["profile"], "the run made profiles"
    events = [e for batch in batches for e in batch]
    references = [[events]]
    if len(events) <= singles and any(len(batch) > 1 for batch in batches):
        references.append([[e] for e in events])
    for other in references:
        want = comparable(run(cfg, other)[0], cfg)
        for ns in want["rows"]:
            assert got["rows"][ns] == want["rows"][ns], ns
        for name in want["meta"]:
            assert got["meta"][name] == want["meta"][name], name
        assert got["pending"] == want["pending"]


def assert_batch_free(
    cfg: PipelineConfig,
    batches: Sequence[Sequence[Event]],
    columns: bool = False,
    singles: int = 400,
) -> Core:
    """Run ``batches`` and :func:`assert_matches`; return the step that ran them."""
    store, core = run(cfg, batches, columns)
    assert_matches(cfg, store, batches, singles)
    return core


def assert_same(
    batches: Sequence[Sequence[Event]], columns: bool = False, **changes: object
) -> Core:
    """:func:`assert_batch_free` on :func:`config` with ``changes`` (and no segment of time
    alone, unless ``changes`` has segments)."""
    return assert_batch_free(config(**{"segments": SEGMENTS, **changes}), batches, columns)


@pytest.mark.parametrize("size", [1, 37, 500, 100_000])
def test_same_state_whatever_the_batches(size: int) -> None:
    events = messed_up(synthetic(seed=1), seed=2)
    # every batch commits whole models: one-event batches get a shorter stream
    assert_same(chunks(events[:400] if size == 1 else events, size))


@pytest.mark.parametrize("hot", [0, 7, 30])
def test_profile_rows_kept_between_batches_give_the_same_state(hot: int) -> None:
    # room for fewer users than the stream has: users leave the kept rows and come back,
    # and are laid out again from their profiles; the same bytes as with no rows kept
    events = messed_up(synthetic(seed=8), seed=9)
    batches = chunks(events, 45)
    core = assert_same(batches, run=RunConfig(dedup_window=500, hot_profiles=hot))
    assert len(core.compiled.resident) == min(hot, 80)
    kept = config(run=RunConfig(dedup_window=500, hot_profiles=hot))
    none = config(run=RunConfig(dedup_window=500, hot_profiles=0))
    assert snapshot(run(kept, batches)[0], kept) == snapshot(run(none, batches)[0], none)


def test_rows_of_profiles_changed_outside_the_compiled_step_are_laid_out_again() -> None:
    # a profile changed between batches by something else (as a merge would change it) must
    # not be overwritten by the row the compiled step kept: the same state as without kept rows
    batches = chunks(messed_up(synthetic(seed=10), seed=11), 60)
    mid = len(batches) // 2
    victim = next(e.user for e in batches[mid] if e.user in {x.user for x in batches[mid - 1]})
    cfg = config()
    snapshots = []
    for kept in (True, False):
        store, core = MemoryStore(), Core(cfg)
        state = PipelineState.load(store, cfg)
        for k, events in enumerate(batches):
            if k == mid:
                assert victim in core.compiled.resident.slot
                state.profiles[victim].n += 5
                if not kept:
                    core.compiled.resident.clear()
            apply_batch(core, state, store, "test", Batch(events=list(events), offset=k + 1))
        snapshots.append(snapshot(store, cfg))
    assert decode_profile(snapshots[0]["rows"]["profile"][victim]).n > 5  # type: ignore[index]
    assert snapshots[0] == snapshots[1]


@pytest.mark.parametrize("size", [37, 100_000])
def test_events_given_as_columns_give_the_same_state(size: int) -> None:
    events = messed_up(synthetic(seed=4), seed=5)
    assert_same(chunks(events, size), columns=True)
    # to the byte, as the same batches of event objects
    cfg = config()
    a, _ = run(cfg, chunks(events, size))
    b, _ = run(cfg, chunks(events, size), columns=True)
    assert snapshot(a, cfg) == snapshot(b, cfg)


def test_same_state_on_ordered_events_with_default_profile_settings() -> None:
    events = synthetic(seed=3, users=150, days=10)
    assert_same(chunks(events, 2_000), profile=ProfileConfig())


def test_same_state_with_tracked_tags_weights_and_no_time_features() -> None:
    from liveprofile.config import FeatureConfig

    events = messed_up(synthetic(seed=4), seed=5)
    assert_same(
        chunks(events, 300),
        profile=ProfileConfig(track=["c0", "c1", "c2"], weights={"view": 0.5, "cart": 0.0}),
        features=FeatureConfig(bits=12, crosses=False, time_of_day=False),
    )


def test_a_login_and_an_erasure_mid_stream_take_the_compiled_path() -> None:
    events = messed_up(synthetic(seed=6), seed=7)
    batches = chunks(events, 400)
    # a login (identity link) and an erasure in the middle: the Python lifecycle runs at the
    # login only, between stretches of the kernel; the kernel takes the erasure itself
    # (engine.droprows), the lifecycle deleting the objects after the call
    mid = len(batches) // 2
    e = batches[mid][0]
    batches[mid] = [
        msgspec.structs.replace(e, event_id="login", anonymous_id="visitor-1"),
        *batches[mid][1:],
    ]
    forget = msgspec.structs.replace(
        e, event_id="forget", type="$forget", item_id=None, category=None, tags=(), value=None
    )
    batches.insert(mid + 2, [forget])
    core = assert_same(batches)
    assert core.compiled.stopped == 1
    assert core.compiled.dropped == 1


@pytest.mark.parametrize("size", [25, 60])
def test_visitors_who_log_in_give_the_same_state(size: int) -> None:
    # visitors browse anonymously and log in at their first purchase: every batch takes the
    # compiled path, the Python lifecycle running only at the logins
    events = messed_up(synthetic(seed=8, logins=True), seed=9)
    batches = chunks(events, size)
    core = assert_same(batches, risk=RiskConfig(velocity=True))
    logins = {e.event_id for b in batches for e in b if e.anonymous_id not in (None, e.user)}
    # a re-sent login is a duplicate: no stop
    assert (
        len(logins)
        <= core.compiled.stopped
        <= sum(e.anonymous_id not in (None, e.user) for b in batches for e in b)
    )


@pytest.mark.parametrize("size", [1, 37, 100_000])
def test_velocity_counts_do_not_depend_on_the_batches(size: int) -> None:
    # tight windows and a small cap, so that pruning and the cap both act
    risk = RiskConfig(
        velocity=True, events_window="1h", purchases_window="1d", items_window="2h", cap=5
    )
    events = messed_up(synthetic(seed=6), seed=7)
    batches = chunks(events[:400] if size == 1 else events, size)
    assert_same(batches, risk=risk)
    store, _ = run(config(risk=risk), batches)
    profiles = [decode_profile(blob) for _, blob in store.scan("profile")]
    assert any(p.v_events for p in profiles) and any(p.v_purchases for p in profiles)
    assert any(len(p.v_items) > 1 for p in profiles)


def test_the_python_engine_is_gone_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="LIVEPROFILE_NO_JIT=1"):
        RunConfig(engine="python")
    with pytest.raises(ConfigError, match="LIVEPROFILE_NO_JIT=1"):
        PipelineConfig.from_dict({"run": {"engine": "python"}})
    assert RunConfig(engine="compiled").engine == "compiled"

"""The step's pending pool carries the running total of a regression task's examples
(``target = "value"``): taking the pending examples over from the state's tasks and handing them
back loses nothing (totals, converted flags, the examples still awaiting conversions), and the
pool writes their pending log as the tasks' objects encode it, to the byte."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from test_compiled import TASKS, chunks, messed_up, snapshot, synthetic

from liveprofile.config import LabelConfig, LearnerConfig, PipelineConfig, RunConfig, TaskConfig
from liveprofile.engine.codes import CodeTables
from liveprofile.engine.core import Core
from liveprofile.engine.local import apply_batch
from liveprofile.engine.pool import PendingPool
from liveprofile.engine.state import PipelineState
from liveprofile.events.sources import Batch
from liveprofile.learn.tasks import PendingLog, encode_logs
from liveprofile.store import MemoryStore


def spend(key: str, window: str = "2d", name: str = "") -> TaskConfig:
    """The value of the purchases of the same user and ``key`` within ``window``."""
    label = LabelConfig(
        kind="delayed", conversion=["purchase"], key=key, window=window, target="value"
    )
    return TaskConfig(name or f"spend_{key}", on=["view", "purchase"], label=label,
                      learner=LearnerConfig(kind="linreg"))  # fmt: skip


SPENDS = [spend("user"), spend("item", "1d"), spend("category")]


def _round_trip(core: Core, state: PipelineState) -> PendingPool:
    """What the compiled step does on taking the state over and on giving it back."""
    pool = PendingPool(CodeTables(core.config, core.features))
    names = [t.name for t in core.config.tasks]
    delayed = pool.tables.delayed
    taken = {t: state.tasks[name].take_pending() for t, name in enumerate(names) if delayed[t]}
    pool.adopt(taken, state.checkpoint.watermark)
    for t, name in enumerate(names):
        if delayed[t]:
            state.tasks[name].give_pending(*pool.hand_back(t), state.checkpoint.watermark)
    return pool


def _replay(cfg: PipelineConfig, size: int, through_pool: bool) -> dict[str, object]:
    events = messed_up(synthetic(seed=31), seed=32)
    store = MemoryStore()
    core = Core(cfg)
    state = PipelineState.load(store, cfg)
    totals = 0
    for k, batch in enumerate(chunks(events, size)):
        apply_batch(core, state, store, "test", Batch(events=list(batch), offset=k + 1))
        if through_pool:
            core.compiled.release()  # the open examples as the tasks' objects
            totals += sum(p.total > 0 for t in SPENDS for p in state.tasks[t.name].pending.values())
            _round_trip(core, state)
    if through_pool:
        assert totals > 0  # the pool carried running totals
    return snapshot(store, cfg)


@pytest.mark.parametrize("size", [37, 211])
def test_the_pool_hands_back_what_it_took(size: int) -> None:
    cfg = PipelineConfig(tasks=[*TASKS, *SPENDS], run=RunConfig(dedup_window=500))
    plain = _replay(cfg, size, through_pool=False)
    assert _replay(cfg, size, through_pool=True) == plain


def test_the_pool_writes_the_pending_log_of_the_tasks_objects() -> None:
    cfg = PipelineConfig(tasks=[*TASKS, *SPENDS], run=RunConfig(dedup_window=500))
    events = messed_up(synthetic(seed=33), seed=34)
    core = Core(cfg)
    state = core.new_state()
    core.step(state, events[: len(events) // 2])
    core.compiled.release()  # the open examples as the tasks' objects
    pool = _round_trip(core, state)
    names = [t.name for t in cfg.tasks]
    checked = 0
    for t, name in enumerate(names):
        if not pool.tables.delayed[t]:
            continue
        live = pool.live(t).copy()
        pendings = pool.pendings(live)
        regression = bool(pool.tables.regression[t])
        conv = live[pool.arrays.conv[live]]
        values = pool.arrays.total[conv] if regression else None
        by_slot = dict(zip(live.tolist(), pendings, strict=True))
        log = PendingLog(
            pendings,
            [by_slot[s].id for s in conv.tolist()],
            [] if values is None else values.tolist(),
        )
        assert encode_logs({name: pool.columns(t, live, conv, values)}) == encode_logs(
            {name: log}
        ), name
        if regression:
            kept = [p.total for p in state.tasks[name].pending.values()]
            assert sorted(p.total for p in pendings) == sorted(kept)
            checked += int(np.count_nonzero(pool.arrays.total[live]))
        for p, q in zip(
            sorted(pendings, key=lambda p: p.id),
            sorted(state.tasks[name].pending.values(), key=lambda p: p.id),
            strict=True,
        ):
            assert msgspec.msgpack.encode(p) == msgspec.msgpack.encode(q)
    assert checked > 0

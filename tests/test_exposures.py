"""Every exposure of a delayed task is an example: repeated exposures of one key each open their
own, a conversion labels every open one of its user and key, ``open_per_key`` bounds how many
await a conversion, and batches and a restart keep the same examples."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from test_compiled import assert_same, chunks, messed_up, synthetic

from liveprofile.config import LabelConfig, PipelineConfig, RunConfig, TaskConfig
from liveprofile.engine.core import Core
from liveprofile.engine.local import LocalRunner
from liveprofile.engine.state import PipelineState
from liveprofile.errors import ConfigError
from liveprofile.events import Event
from liveprofile.events.sources import Batch
from liveprofile.store import SQLiteStore

DAY = 86400.0
T0 = 1_704_067_200.0


def convert_task(per_key: int = 32, window: str = "1d") -> TaskConfig:
    label = LabelConfig(
        kind="delayed", conversion=["purchase"], key="item", window=window, open_per_key=per_key
    )
    return TaskConfig("convert", on=["view"], label=label)


def pipeline(*tasks: TaskConfig) -> PipelineConfig:
    return PipelineConfig(tasks=list(tasks))


def view(n: int, user: str, ts: float, item: str = "i1") -> Event:
    return Event(f"v{n}", user, "view", ts, item_id=item, category="c")


def buy(n: int, user: str, ts: float, item: str = "i1") -> Event:
    return Event(f"b{n}", user, "purchase", ts, item_id=item, category="c", value=5.0)


def labels(per_key: int, events: list[Event]) -> tuple[int, int]:
    """How many positive and negative examples the convert task learned from ``events``."""
    core = Core(pipeline(convert_task(per_key)))
    state = core.new_state()
    core.step(state, [*events, view(999, "other", events[-1].ts + 3 * DAY, "i9")])
    metrics = state.tasks["convert"].metrics
    return int(metrics.pos.sum()), int(metrics.neg.sum())


def test_three_views_and_a_purchase_are_three_positive_examples() -> None:
    t = T0
    events = [
        view(1, "u1", t),
        view(2, "u1", t + 60),
        view(3, "u1", t + 120),
        buy(1, "u1", t + 600),
    ]
    assert labels(32, events) == (3, 0)
    # the former rule: one open example per (user, key), the repeated views give nothing
    assert labels(1, events) == (1, 0)


def test_a_conversion_labels_only_the_examples_whose_window_holds_it() -> None:
    t = T0
    events = [
        view(1, "u1", t),  # its window closes before the purchase
        view(2, "u1", t + 0.5 * DAY),
        view(3, "u1", t + 0.9 * DAY),
        buy(1, "u1", t + 1.2 * DAY),
        view(4, "u1", t + 1.3 * DAY),  # after the purchase: needs another one
    ]
    assert labels(32, events) == (2, 2)


def test_open_per_key_bounds_the_examples_awaiting_a_conversion() -> None:
    core = Core(pipeline(convert_task(per_key=2)))
    state = core.new_state()
    task = state.tasks["convert"]
    t = T0
    core.step(state, [view(k, "u1", t + k) for k in range(5)])
    core.compiled.release()  # the open examples as the task's objects
    assert [p.open_ts for p in task.waiting[("u1", "i1")]] == [t, t + 1]
    assert len(task.pending) == 2  # the other three views opened nothing
    core.step(state, [buy(1, "u1", t + 10), view(9, "u1", t + 20)])
    core.compiled.release()
    # converted examples await nothing: the next view opens again
    assert [p.open_ts for p in task.waiting[("u1", "i1")]] == [t + 20]
    assert sum(p.converted for p in task.pending.values()) == 2


def test_open_per_key_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="open_per_key"):
        LabelConfig(kind="delayed", conversion=["purchase"], open_per_key=0)


def repeated(events: list[Event], seed: int) -> list[Event]:
    """``events`` with each view repeated once or twice a little later (new event ids)."""
    out = list(events)
    for k, e in enumerate(events):
        if e.type == "view" and (k + seed) % 3:
            for r in range(1 + (k + seed) % 2):
                ts = e.ts + 300.0 * (r + 1)
                out.append(msgspec.structs.replace(e, event_id=f"{e.event_id}-again{r}", ts=ts))
    out.sort(key=lambda e: e.ts)
    return out


def tasks_with(per_key: int) -> list[TaskConfig]:
    from test_compiled import TASKS

    return [
        msgspec.structs.replace(t, label=msgspec.structs.replace(t.label, open_per_key=per_key))
        if t.label.kind == "delayed"
        else t
        for t in TASKS
    ]


@pytest.mark.parametrize(("per_key", "size"), [(32, 53), (32, 100_000), (2, 211), (1, 500)])
def test_repeated_exposures_give_the_same_state_whatever_the_batches(
    per_key: int, size: int
) -> None:
    events = messed_up(repeated(synthetic(seed=8), seed=1), seed=3)
    assert_same(chunks(events, size), tasks=tasks_with(per_key))


def waiting_ids(state: PipelineState) -> dict[str, list[list[tuple[str, str, float]]]]:
    return {
        name: [[p.id for p in chain] for _, chain in sorted(task.waiting.items())]
        for name, task in state.tasks.items()
    }


def release(runner: LocalRunner) -> None:
    """Have the compiled path hand its open examples back to the tasks, where tests read them."""
    compiled = runner.core.compiled
    if compiled is not None and compiled.owner is runner.state:
        compiled.release()


def test_a_restart_keeps_every_open_example_and_its_order(tmp_path: Path) -> None:
    cfg = PipelineConfig(tasks=tasks_with(3), run=RunConfig(batch_size=97, dedup_window=500))
    events = repeated(synthetic(seed=9), seed=2)
    batches = chunks(events, 97)
    mid = len(batches) // 2

    def run(path: Path, restart: bool) -> PipelineState:
        runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
        for k, batch in enumerate(batches):
            if restart and k == mid:
                runner.close()
                runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
            if k == mid:
                release(runner)
                got = waiting_ids(runner.state)
                assert any(len(c) > 1 for chains in got.values() for c in chains)
            runner.process("src", Batch(events=batch, offset=k + 1))
        release(runner)
        state = runner.state
        runner.close()
        return state

    clean, split = run(tmp_path / "clean.db", False), run(tmp_path / "split.db", True)
    assert waiting_ids(split) == waiting_ids(clean)
    assert {n: sorted(t.pending) for n, t in split.tasks.items()} == {
        n: sorted(t.pending) for n, t in clean.tasks.items()
    }

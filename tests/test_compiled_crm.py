"""CRM tasks: a delayed label keyed by user (any conversion of the same user within the window)
gives the same state whatever the batches, with every ``label.feedback`` mode, beside identity
links, erasures and merges, and after a restart (what it learns is worked out in
``test_crm.py``)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from test_compiled import TASKS, assert_batch_free, assert_same, chunks, messed_up, synthetic
from test_compiled_lifecycle import mixed

from liveprofile.config import (
    LabelConfig,
    PipelineConfig,
    RiskConfig,
    RunConfig,
    TaskConfig,
)
from liveprofile.engine.local import LocalRunner
from liveprofile.events.sources import Batch
from liveprofile.store import SQLiteStore


def repeat(feedback: str = "window", window: str = "2d") -> TaskConfig:
    """Any purchase of the same user within ``window`` after a purchase (repeat purchase)."""
    label = LabelConfig(
        kind="delayed", conversion=["purchase"], key="user", window=window, feedback=feedback
    )
    return TaskConfig("repeat", on=["purchase", "cart"], label=label)


@pytest.mark.parametrize("size", [1, 45, 100_000])
def test_a_user_keyed_task_gives_the_same_state(size: int) -> None:
    events = messed_up(synthetic(seed=21), seed=22)
    assert_same(chunks(events[:400] if size == 1 else events, size), tasks=[*TASKS, repeat()])


@pytest.mark.parametrize("feedback", ["fnc", "fnw", "wait"])
def test_a_user_keyed_task_gives_the_same_state_in_every_feedback_mode(feedback: str) -> None:
    events = messed_up(synthetic(seed=23), seed=24)
    assert_same(chunks(events, 97), tasks=[*TASKS, repeat(feedback)])


@pytest.mark.parametrize("size", [23, 100_000])
def test_links_erasures_and_merges_beside_a_user_keyed_task(size: int) -> None:
    events = mixed(seed=25)
    cfg = PipelineConfig(
        tasks=[*TASKS, repeat()],
        risk=RiskConfig(velocity=True, window_size=20),
        run=RunConfig(dedup_window=500),
    )
    core = assert_batch_free(cfg, chunks(events, size), singles=0)
    assert core.compiled.stopped > 0


def test_a_restart_changes_nothing(tmp_path: Path) -> None:
    events = messed_up(synthetic(seed=27), seed=28)
    tasks = [*TASKS, repeat(window="3d")]

    def replay(path: Path, restart: bool) -> tuple[bytes | None, bytes | None]:
        cfg = PipelineConfig(tasks=tasks, run=RunConfig(dedup_window=500))
        batches = chunks(events, 131)
        runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
        for k, batch in enumerate(batches):
            if restart and k == len(batches) // 2:
                runner.close()  # the open examples keyed by user come back from the store
                runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
            runner.process("src", Batch(events=batch, offset=k + 1))
        store = runner.store
        out = store.get_meta("model/repeat"), store.get_meta("metrics/repeat")
        runner.close()
        return out

    once = replay(tmp_path / "once.db", False)
    assert once[0] is not None
    assert replay(tmp_path / "restarted.db", True) == once
    assert msgspec.msgpack.decode(once[1] or b"")  # metrics were committed

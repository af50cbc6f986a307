"""Delayed feedback (``label.feedback``): with ``fnc`` every exposure is learned at once as a
negative and again as a positive when it converts, the served prediction is corrected for the
fake negatives, prequential evaluation still scores each exposure once against its true label,
and the state does not depend on the batches, a restart, or the open examples handed back to the
state's tasks and taken again."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from test_compiled import TASKS, assert_same, chunks, messed_up, run, snapshot, synthetic
from test_exposures import DAY, T0, buy, view

from liveprofile.config import LabelConfig, LearnerConfig, PipelineConfig, RunConfig, TaskConfig
from liveprofile.engine.core import Core
from liveprofile.engine.local import LocalRunner, apply_batch
from liveprofile.engine.state import PipelineState
from liveprofile.errors import ConfigError
from liveprofile.events.sources import Batch
from liveprofile.learn.base import LEARN, PREDICT_LEARN, OpBatch, run_ops, sparse_example
from liveprofile.learn.delayed import P_MAX, fnc_correct, fnc_correct_many, op_flags, served
from liveprofile.learn.tasks import Pending
from liveprofile.store import MemoryStore, SQLiteStore


def fnc_task(window: str = "1d", mode: str = "fnc") -> TaskConfig:
    label = LabelConfig(
        kind="delayed", conversion=["purchase"], key="item", window=window, feedback=mode
    )
    return TaskConfig("convert", on=["view"], label=label)


def core_of(*tasks: TaskConfig) -> Core:
    return Core(PipelineConfig(tasks=list(tasks)))


def opened_examples(core: Core, state: PipelineState) -> list[Pending]:
    """The open examples, as objects (handed back to the state's tasks; the next step takes
    them again), by exposure time."""
    core.compiled.release()
    return sorted(state.tasks["convert"].pending.values(), key=lambda p: (p.open_ts, p.user))


def features(p: Pending) -> dict[object, float]:
    idx = memoryview(p.idx).cast("q")
    val = memoryview(p.val).cast("d")
    return sparse_example(idx, val, 0, len(idx))  # type: ignore[return-value]


@pytest.mark.parametrize("mode", ["fnc", "fnw"])
def test_exposures_are_learned_as_negatives_at_once_and_positives_at_conversion(
    mode: str,
) -> None:
    core = core_of(fnc_task(mode=mode))
    state = core.new_state()
    views = [view(k, f"u{k % 3}", T0 + 60 * k, f"i{k % 3 + k % 2}") for k in range(12)]
    core.step(state, views)
    opened = opened_examples(core, state)
    core.step(state, [buy(1, "u1", T0 + 3600, "i1")])  # converts u1's two views of i1
    # the same operations by hand on a fresh learner: each view predicted then learned as a
    # negative, the converted ones learned again as positives (latest exposure first)
    reference = core_of(fnc_task()).new_state().tasks["convert"].learner
    assert reference is not None
    flags = op_flags(mode)
    for p in opened:
        b = float(run_ops(reference, one_op(PREDICT_LEARN | flags, p, 0.0))[0])
        assert p.p == served(mode, b)  # fnc: corrected; fnw: as it is
    for p in reversed([p for p in opened if p.user == "u1" and p.key == "i1"]):
        run_ops(reference, one_op(LEARN | flags, p, 1.0))
    x = features(opened[0])
    learner = state.tasks["convert"].learner
    assert learner is not None
    assert learner.predict_proba_one(x) == reference.predict_proba_one(x)
    # fake-negative weights change the model
    plain = core_of(fnc_task(mode="fnc" if mode == "fnw" else "fnw"))
    pstate = plain.new_state()
    plain.step(pstate, views)
    plain.step(pstate, [buy(1, "u1", T0 + 3600, "i1")])
    other = pstate.tasks["convert"].learner
    assert other is not None
    assert other.predict_proba_one(x) != learner.predict_proba_one(x)
    core.step(state, [view(99, "u9", T0 + 2 * DAY, "i9")])  # closes the windows
    # evaluated once each, against the true label, when the window closed
    metrics = state.tasks["convert"].metrics
    assert metrics.n == 12
    assert int(metrics.pos.sum()) == 2


def one_op(kind: int, p: Pending, y: float) -> OpBatch:
    ops = OpBatch()
    ops.add_packed(kind, p.idx, p.val, y)
    return ops


def test_a_served_score_is_the_corrected_prediction() -> None:
    core = core_of(fnc_task())
    state = core.new_state()
    core.step(state, [view(k, "u1", T0 + k, f"i{k}") for k in range(30)])
    last = opened_examples(core, state)[-1]
    assert state.profiles["u1"].scores["convert"] == last.p
    # thirty negatives learned: the raw output fell below 1/2, the corrected one is below it
    assert 0.0 < last.p < P_MAX


def test_the_correction_inverts_the_fake_negative_rate() -> None:
    for p in (0.0, 0.01, 0.2, 0.5, 0.9):
        b = p / (1 + p)  # the positive rate of a stream with every positive also a negative
        assert fnc_correct(b) == pytest.approx(p)
    b = np.random.default_rng(0).uniform(0.0, 1.0, 1000)
    # the step corrects its arrays, a single prediction is corrected alone: the same bits
    assert fnc_correct_many(b).tolist() == [fnc_correct(x) for x in b.tolist()]


def test_feedback_needs_a_delayed_label_that_learns_whether_it_converted() -> None:
    with pytest.raises(ConfigError, match="feedback"):
        TaskConfig("x", on=["rate"], label=LabelConfig(kind="value", feedback="fnc"))
    with pytest.raises(ConfigError, match="feedback"):
        TaskConfig(
            "x",
            on=["view"],
            label=LabelConfig(
                kind="delayed", conversion=["purchase"], target="value", feedback="fnc"
            ),
            learner=LearnerConfig(kind="linreg"),
        )


def fed(mode: str) -> list[TaskConfig]:
    """The compiled tests' tasks, the delayed ones fed in ``mode``."""
    return [
        msgspec.structs.replace(t, label=msgspec.structs.replace(t.label, feedback=mode))
        if t.label.kind == "delayed"
        else t
        for t in TASKS
    ]


@pytest.mark.parametrize(("mode", "size"), [("fnc", 1), ("fnc", 45), ("fnc", 100_000), ("fnw", 45)])
def test_fake_negatives_give_the_same_state_whatever_the_batches(mode: str, size: int) -> None:
    events = messed_up(synthetic(seed=3), seed=4)
    assert_same(chunks(events[:400] if size == 1 else events, size), tasks=fed(mode))


def test_fake_negative_weights_need_a_learner_that_weighs() -> None:
    with pytest.raises(ConfigError, match="fnw"):
        TaskConfig(
            "x",
            on=["view"],
            label=LabelConfig(kind="delayed", conversion=["purchase"], feedback="fnw"),
            learner=LearnerConfig(kind="hoeffding"),
        )


def test_with_a_wait_an_example_is_learned_when_its_wait_ends_and_late_positives_again() -> None:
    label = LabelConfig(
        kind="delayed", conversion=["purchase"], key="item", window="1d", feedback="wait",
        wait="1h",
    )  # fmt: skip
    task = TaskConfig("convert", on=["view"], label=label)
    core = core_of(task)
    state = core.new_state()
    early = [view(1, "u1", T0, "i1"), buy(1, "u1", T0 + 600, "i1")]  # converts within the wait
    late = [view(2, "u2", T0, "i2"), buy(2, "u2", T0 + 7200, "i2")]  # converts after it
    core.step(state, [early[0], late[0]])
    opened = opened_examples(core, state)
    learner = state.tasks["convert"].learner
    reference = core_of(fnc_task()).new_state().tasks["convert"].learner
    assert learner is not None and reference is not None
    x = features(opened[0])
    assert learner.predict_proba_one(x) == reference.predict_proba_one(x)  # nothing learned yet
    core.step(state, [early[1], view(3, "u3", T0 + 3000, "i3")])  # within the wait: nothing
    assert learner.predict_proba_one(x) == reference.predict_proba_one(x)
    (third,) = [p for p in opened_examples(core, state) if p.user == "u3"]
    # past every wait: u1's positive, u2's and u3's negatives, then u2's late positive
    core.step(state, [late[1]])
    for p, y in ((opened[0], 1.0), (opened[1], 0.0), (third, 0.0), (opened[1], 1.0)):
        run_ops(reference, one_op(LEARN, p, y))
    assert learner.predict_proba_one(x) == reference.predict_proba_one(x)
    core.step(state, [view(99, "u9", T0 + 2 * DAY, "i9")])  # closes the windows: no more learning
    assert learner.predict_proba_one(x) == reference.predict_proba_one(x)
    metrics = state.tasks["convert"].metrics
    assert (metrics.n, int(metrics.pos.sum())) == (3, 2)


def test_a_wait_must_be_shorter_than_the_window() -> None:
    with pytest.raises(ConfigError, match="wait < window"):
        TaskConfig(
            "x",
            on=["view"],
            label=LabelConfig(
                kind="delayed", conversion=["purchase"], window="1h", feedback="wait", wait="2h"
            ),
        )


def waited(window: str = "1d", wait: str = "2h") -> list[TaskConfig]:
    """The compiled tests' tasks, the delayed ones learned after ``wait``."""
    return [
        msgspec.structs.replace(
            t,
            label=msgspec.structs.replace(t.label, window=window, feedback="wait", wait=wait),
        )
        if t.label.kind == "delayed"
        else t
        for t in TASKS
    ]


@pytest.mark.parametrize(
    ("wait", "size"), [("2h", 1), ("2h", 45), ("30m", 45), ("20h", 100_000), ("1h", 997)]
)
def test_a_wait_gives_the_same_state_whatever_the_batches(wait: str, size: int) -> None:
    # late exposures land before and after the end of their wait, and after their window
    events = messed_up(synthetic(seed=3), seed=4)
    assert_same(chunks(events[:400] if size == 1 else events, size), tasks=waited(wait=wait))


@pytest.mark.parametrize("tasks", [TASKS, waited(wait="3h")], ids=["window", "wait"])
def test_the_open_examples_handed_back_and_taken_by_another_step_change_nothing(
    tasks: list[TaskConfig],
) -> None:
    # half the stream on one step, which hands its open examples (and their waits) back to the
    # state's tasks as objects; the rest on another step, which takes them: as one step
    events = messed_up(synthetic(seed=9), seed=10)
    batches = chunks(events, 211)
    cfg = PipelineConfig(tasks=tasks, run=RunConfig(dedup_window=500))
    first, second = Core(cfg), Core(cfg)
    store = MemoryStore()
    state = PipelineState.load(store, cfg)
    offset = 0
    for k, batch in enumerate(batches):
        if k == len(batches) // 2:
            first.compiled.release()
            assert any(task.pending for task in state.tasks.values())
        core = first if k < len(batches) // 2 else second
        offset += len(batch)
        apply_batch(core, state, store, "test", Batch(events=batch, offset=offset))
    reference, _ = run(cfg, batches)
    a, b = snapshot(reference, cfg), snapshot(store, cfg)
    for ns in a["rows"]:
        assert a["rows"][ns] == b["rows"][ns], ns
    assert a["meta"] == b["meta"]


def test_with_a_wait_batches_and_a_restart_change_nothing(tmp_path: Path) -> None:
    events = messed_up(synthetic(seed=5), seed=6)
    cfg = PipelineConfig(tasks=waited(), run=RunConfig(batch_size=97, dedup_window=500))

    def run(
        path: Path, size: int, restart: bool, cfg: PipelineConfig = cfg
    ) -> tuple[bytes | None, dict[str, object]]:
        batches = chunks(events, size)
        runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
        for k, batch in enumerate(batches):
            if restart and k == len(batches) // 2:
                runner.close()  # the open examples and their waits come back from the store
                runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
            runner.process("src", Batch(events=batch, offset=k + 1))
        store = runner.store
        model = store.get_meta("model/convert")
        metrics = {t.name: store.get_meta(f"metrics/{t.name}") for t in cfg.tasks}
        runner.close()
        return model, metrics

    whole = run(tmp_path / "whole.db", 100_000, False)
    assert run(tmp_path / "cut.db", 97, False) == whole
    assert run(tmp_path / "restart.db", 97, True) == whole
    # and the wait changes what is learned
    window = PipelineConfig(tasks=TASKS, run=RunConfig(batch_size=97, dedup_window=500))
    assert run(tmp_path / "window.db", 100_000, False, window)[0] != whole[0]

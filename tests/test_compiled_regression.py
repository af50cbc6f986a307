"""Regression tasks (``target = "value"``: the value of the conversions within the window) give
the same state whatever the batches: profiles, items, pending logs (totals and per-conversion
values), models, MAE/RMSE metrics and checkpoint, over random pipelines (keys item, category and
user, windows, ``open_per_key``, beside other tasks and every feedback mode of theirs), with
identity links, erasures and merges, after a restart, and with many conversions per example (the
room for them counted per (user, key)). What a value target learns is worked out in
``test_crm.py``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compiled import (
    SEGMENTS,
    TASKS,
    assert_batch_free,
    assert_matches,
    chunks,
    messed_up,
    run,
    snapshot,
    synthetic,
)
from test_compiled_crm import repeat
from test_compiled_lifecycle import mixed

from liveprofile.config import (
    LabelConfig,
    LearnerConfig,
    PipelineConfig,
    ProfileConfig,
    RiskConfig,
    RunConfig,
    TaskConfig,
)
from liveprofile.engine import compiled, convroom
from liveprofile.engine.core import Core
from liveprofile.engine.local import LocalRunner
from liveprofile.events import Event
from liveprofile.events.sources import Batch
from liveprofile.learn.regression import RegressionMetrics, metrics_from_bytes
from liveprofile.store import SQLiteStore

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

LINREG = LearnerConfig(kind="linreg")


def spend(
    key: str = "user",
    window: str = "2d",
    per_key: int = 32,
    on: tuple[str, ...] = ("view", "purchase"),
    conversion: tuple[str, ...] = ("purchase",),
    name: str = "spend",
    learner: LearnerConfig = LINREG,
) -> TaskConfig:
    """The value of the conversions of the same user and ``key`` within ``window``."""
    label = LabelConfig(
        kind="delayed", conversion=list(conversion), key=key, window=window,
        open_per_key=per_key, target="value",
    )  # fmt: skip
    return TaskConfig(name, on=list(on), label=label, learner=learner)


def with_values(events: list[Event], seed: int) -> list[Event]:
    """Some conversions without a value (they add 0.0), some with a negative one (a refund)."""
    rnd = random.Random(seed)
    out = []
    for e in events:
        if e.type in ("purchase", "cart") and rnd.random() < 0.25:
            e = msgspec.structs.replace(e, value=rnd.choice([None, -3.5, 120.0]))
        out.append(e)
    return out


def pipeline(tasks: list[TaskConfig], **run: Any) -> PipelineConfig:
    return PipelineConfig(
        tasks=tasks,
        risk=RiskConfig(velocity=False),
        traits={"buyer": "frequency > 2"},
        segments=SEGMENTS,
        run=RunConfig(dedup_window=500, **run),
        profile=ProfileConfig(top_k=4, outcome_keys=3),
    )


def same_state(tasks: list[TaskConfig], batches: list[list[Event]]) -> dict[str, Any]:
    """The snapshot after ``batches``, asserted to be the state of one batch of them all."""
    cfg = pipeline(tasks)
    store, _ = run(cfg, batches)
    assert_matches(cfg, store, batches, singles=0)
    return snapshot(store, cfg)


def regression_summary(shot: dict[str, Any], name: str) -> dict[str, Any]:
    metrics = metrics_from_bytes(shot["meta"][f"metrics/{name}"])
    assert isinstance(metrics, RegressionMetrics)
    return metrics.summary()


OTHERS = {
    **{t.name: t for t in TASKS},
    "repeat": repeat(),
    "repeat_fnc": msgspec.structs.replace(repeat("fnc"), name="repeat_fnc"),
    "repeat_fnw": msgspec.structs.replace(repeat("fnw"), name="repeat_fnw"),
    "repeat_wait": msgspec.structs.replace(repeat("wait", window="2d"), name="repeat_wait"),
}


@st.composite
def regression_tasks(draw: st.DrawFn, name: str) -> TaskConfig:
    return spend(
        key=draw(st.sampled_from(["item", "category", "user"])),
        window=draw(st.sampled_from(["6h", "1d", "3d"])),
        per_key=draw(st.sampled_from([1, 2, 32])),
        on=draw(st.sampled_from([("view",), ("purchase",), ("view", "cart", "purchase")])),
        conversion=draw(st.sampled_from([("purchase",), ("cart", "purchase")])),
        name=name,
    )


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    spends=st.integers(1, 2).flatmap(
        lambda n: st.tuples(*(regression_tasks(f"spend{k}") for k in range(n)))
    ),
    others=st.lists(st.sampled_from(sorted(OTHERS)), unique=True, max_size=2),
    size=st.sampled_from([29, 200, 100_000]),
    seed=st.integers(0, 1000),
)
def test_random_regression_pipelines_give_the_same_state(
    spends: tuple[TaskConfig, ...], others: list[str], size: int, seed: int
) -> None:
    events = with_values(messed_up(synthetic(seed=seed, users=40, days=4), seed=seed + 1), seed)
    tasks = [*spends, *(OTHERS[o] for o in others)]
    shot = same_state(tasks, chunks(events, size))
    assert any(regression_summary(shot, t.name)["n"] for t in spends)


@pytest.mark.parametrize("key", ["item", "category", "user"])
def test_every_key_learns_nonzero_totals_to_the_same_bytes(key: str) -> None:
    events = with_values(messed_up(synthetic(seed=41), seed=42), seed=43)
    tasks = [spend(key, window="3d", on=("view", "cart", "purchase")), *TASKS]
    shot = same_state(tasks, chunks(events, 97))
    summary = regression_summary(shot, "spend")
    assert summary["n"] > 100 and summary["mean_target"] > 0.0 and summary["mae"] > 0.0


def test_a_river_regressor_gives_the_same_state() -> None:
    river = LearnerConfig(kind="river", model="linear_model.LinearRegression")
    events = with_values(synthetic(seed=44, users=30, days=3), seed=45)
    shot = same_state([spend(learner=river)], chunks(events, 150))
    assert regression_summary(shot, "spend")["n"] > 0


@pytest.mark.parametrize("size", [23, 100_000])
def test_links_erasures_and_merges_beside_regression_tasks(size: int) -> None:
    events = with_values(mixed(seed=46), seed=47)
    tasks = [*TASKS, spend("user"), spend("item", name="spend_item", window="1d")]
    cfg = PipelineConfig(
        tasks=tasks,
        risk=RiskConfig(velocity=True, window_size=20),
        run=RunConfig(dedup_window=500),
    )
    core = assert_batch_free(cfg, chunks(events, size), singles=0)
    assert core.compiled.stopped > 0


def test_a_restart_changes_nothing(tmp_path: Path) -> None:
    events = with_values(messed_up(synthetic(seed=48), seed=49), seed=50)
    tasks = [*TASKS, spend("user", window="3d"), spend("category", name="spend_cat")]

    def replay(path: Path, restart: bool) -> dict[str, bytes | None]:
        cfg = PipelineConfig(tasks=tasks, run=RunConfig(dedup_window=500))
        batches = chunks(events, 131)
        runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
        for k, batch in enumerate(batches):
            if restart and k == len(batches) // 2:
                runner.close()  # the open examples and their totals come back from the store
                runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
            runner.process("src", Batch(events=batch, offset=k + 1))
        store = runner.store
        out = {f"{kind}/{t.name}": store.get_meta(f"{kind}/{t.name}")
               for t in tasks for kind in ("model", "metrics")}  # fmt: skip
        out["pending"] = b"".join(v for _, v in sorted(store.scan("pending")))
        runner.close()
        return out

    once = replay(tmp_path / "once.db", False)
    assert once["model/spend"] is not None
    assert replay(tmp_path / "restarted.db", True) == once


def _watch_room(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """(room, conversions, distinct examples converted) of the compiled step's batches, counted
    per (user, key) whatever the batch."""
    monkeypatch.setattr(convroom, "SIMPLE_ROOM", 0)
    seen: list[tuple[int, int, int]] = []
    made = []
    real = compiled.buffers

    def buffers(*args: Any) -> Any:
        ops, outputs = real(*args)
        made.append(outputs)
        return ops, outputs

    monkeypatch.setattr(compiled, "buffers", buffers)
    real_step = compiled.CompiledStep.step

    def step(self: compiled.CompiledStep, state: Any, events: Any) -> Any:
        out = real_step(self, state, events)
        outputs = made.pop()
        n = int(outputs.n_converted.max(initial=0))
        distinct = max(
            len(set(outputs.converted[t, : outputs.n_converted[t]].tolist()))
            for t in range(len(outputs.n_converted))
        )
        seen.append((int(outputs.converted.shape[1]), n, distinct))
        return out

    monkeypatch.setattr(compiled.CompiledStep, "step", step)
    return seen


@pytest.mark.parametrize("links", [False, True])
def test_many_conversions_per_example_fit_the_room_counted_per_key(
    monkeypatch: pytest.MonkeyPatch, links: bool
) -> None:
    seen = _watch_room(monkeypatch)
    base = mixed(seed=52) if links else messed_up(synthetic(seed=51), seed=52)
    events = with_values(base, seed=53)
    # every purchase converts every open example of its user within a week, again and again
    task = spend("user", window="7d", per_key=1000, on=("view", "cart", "purchase"))
    shot = same_state([task, *TASKS], chunks(events, 300))
    assert regression_summary(shot, "spend")["mean_target"] > 0.0
    assert seen and all(n <= room for room, n, _ in seen)
    assert any(n > distinct for _, n, distinct in seen)  # examples converted more than once


def test_the_training_log_holds_the_totals_whatever_the_batches(tmp_path: Path) -> None:
    events = with_values(messed_up(synthetic(seed=54), seed=55), seed=56)
    tasks = [spend("user", window="1d"), *TASKS]
    logs = []
    for size in (113, 100_000):
        cfg = msgspec.structs.replace(pipeline(tasks), run=RunConfig(training_log=str(tmp_path)))
        core = Core(cfg)
        state = core.new_state()
        columns: dict[str, list[Any]] = {}
        for batch in chunks(events, size):
            learned = core.step(state, batch).learned
            assert learned is not None
            for name, values in learned.columns.items():
                columns.setdefault(name, []).extend(values)
        logs.append(columns)
    assert logs[0] == logs[1]
    targets = [y for t, y in zip(logs[0]["task"], logs[0]["label"], strict=True) if t == "spend"]
    assert any(y not in (0.0, 1.0) for y in targets)  # totals, not flags

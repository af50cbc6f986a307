"""CRM tasks: a delayed label keyed by user (any conversion of the same user within the window:
repeat purchase, and churn as its negation) and a value target (spend within the window, learned
by a regressor, MAE and RMSE). Both run on both steps, to the same bytes
(``tests/test_compiled_crm.py``, ``tests/test_compiled_regression.py``)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from liveprofile.config import LabelConfig, LearnerConfig, PipelineConfig, RunConfig, TaskConfig
from liveprofile.engine.core import Core
from liveprofile.engine.local import LocalRunner
from liveprofile.errors import ConfigError
from liveprofile.events import Event
from liveprofile.events.sources import Batch
from liveprofile.learn.regression import RegressionMetrics
from liveprofile.store import SQLiteStore

DAY = 86400.0
T0 = 1_704_067_200.0

REPEAT = TaskConfig(
    "repeat_30d",
    on=["purchase"],
    label=LabelConfig(kind="delayed", conversion=["purchase"], key="user", window="30d"),
)


def buy(n: int, user: str, day: float, item: str, category: str) -> Event:
    return Event(f"b{n}", user, "purchase", T0 + day * DAY, item_id=item, category=category)


EVENTS = [
    buy(1, "ann", 0, "milk", "dairy"),
    buy(2, "bob", 1, "bread", "bakery"),
    buy(3, "ann", 12, "soap", "household"),  # another category: still a repeat purchase
    buy(4, "cat", 20, "tea", "drinks"),
    buy(5, "bob", 40, "jam", "pantry"),  # after bob's window: his first purchase churned
    buy(6, "dan", 80, "rice", "pantry"),  # closes every window above
]


def test_any_purchase_of_the_same_user_within_the_window_is_a_repeat() -> None:
    core = Core(PipelineConfig(tasks=[REPEAT]))
    state = core.new_state()
    core.step(state, EVENTS)
    core.compiled.release()  # the open examples back to the task, as objects
    task = state.tasks["repeat_30d"]
    # ann's first purchase repeated; ann's second, bob's two and cat's did not
    assert (int(task.metrics.pos.sum()), int(task.metrics.neg.sum())) == (1, 4)
    assert state.profiles["ann"].positives == {"repeat_30d": 1}
    assert state.profiles["bob"].examples == {"repeat_30d": 2}
    assert "repeat_30d" not in state.profiles["bob"].positives
    assert set(task.pending) == {("dan", "dan", T0 + 80 * DAY)}
    # the churn risk a segment reads: 1 - score.repeat_30d
    assert 0.0 < state.profiles["dan"].scores["repeat_30d"] < 1.0


def test_a_user_keyed_task_beside_item_tasks_gives_both_their_examples() -> None:
    convert = TaskConfig(
        "convert",
        on=["view"],
        label=LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="1d"),
    )
    cfg = PipelineConfig(
        tasks=[REPEAT, convert],
        segments={"at_risk": "score.repeat_30d < 0.45 and frequency >= 1"},
    )
    core = Core(cfg)
    state = core.new_state()
    view = Event("v1", "ann", "view", T0 - 3600, item_id="milk", category="dairy")
    out = core.step(state, [view, *EVENTS])
    assert state.tasks["convert"].metrics.n == 1  # ann's view of milk, bought within a day
    assert int(state.tasks["convert"].metrics.pos.sum()) == 1
    assert state.tasks["repeat_30d"].metrics.n == 5
    assert {c.segment for c in out.changes} <= {"at_risk"}


SPEND = TaskConfig(
    "spend_30d",
    on=["purchase"],
    label=LabelConfig(
        kind="delayed", conversion=["purchase"], key="user", window="30d", target="value"
    ),
    learner=LearnerConfig(kind="linreg"),
)


def spend_events() -> list[Event]:
    values = [3.0, 8.0, 5.0, 2.0, 7.0, 1.0]
    return [
        Event(e.event_id, e.user, e.type, e.ts, item_id=e.item_id, category=e.category, value=v)
        for e, v in zip(EVENTS, values, strict=True)
    ]


def test_a_value_target_learns_the_spend_within_the_window() -> None:
    core = Core(PipelineConfig(tasks=[SPEND]))
    state = core.new_state()
    core.step(state, spend_events()[:3])
    core.compiled.release()  # the pending examples back to the task, to look at
    first = state.tasks["spend_30d"].pending[("ann", "ann", T0)]
    assert first.converted and first.total == 5.0  # ann's purchase on day 12
    core.step(state, spend_events()[3:])
    metrics = state.tasks["spend_30d"].metrics
    assert isinstance(metrics, RegressionMetrics)
    # targets: ann 5 then 0, bob 0 (his next purchase is past the window) and 0, cat 0
    summary = metrics.summary()
    assert summary["n"] == 5 and summary["mean_target"] == 1.0
    assert summary["rmse"] >= summary["mae"] > 0.0
    assert summary["auc"] is None and metrics.windows()[0]["mae"] is not None
    # the prediction starts at the mean target learned so far
    assert state.profiles["dan"].scores["spend_30d"] > 0.0


def test_value_targets_survive_a_restart(tmp_path: Path) -> None:
    cfg = PipelineConfig(tasks=[SPEND, REPEAT], run=RunConfig(batch_size=2))
    events = spend_events()
    batches = [events[k : k + 2] for k in range(0, len(events), 2)]

    def run(path: Path, restart: int | None) -> dict[str, object]:
        runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
        for k, batch in enumerate(batches):
            if k == restart:
                runner.close()
                runner = LocalRunner(cfg, SQLiteStore(path), path.with_suffix(".dead"))
            runner.process("src", Batch(events=batch, offset=k + 1))
        out = {n: t.metrics.summary() for n, t in runner.state.tasks.items()}
        if runner.core.compiled is not None:  # the open examples back from its arrays
            runner.core.compiled.release()
        out["pending"] = sorted(
            (p.id, p.total) for p in runner.state.tasks["spend_30d"].pending.values()
        )
        runner.close()
        return out

    clean = run(tmp_path / "clean.db", None)
    assert clean["spend_30d"]["n"] == 5  # type: ignore[index]
    assert clean["pending"]  # dan's purchase, open
    for restart in (1, 2):
        assert run(tmp_path / f"r{restart}.db", restart) == clean


def test_a_river_regressor_plugs_in() -> None:
    river = LearnerConfig(kind="river", model="linear_model.LinearRegression")
    task = msgspec.structs.replace(SPEND, learner=river)
    core = Core(PipelineConfig(tasks=[task]))
    state = core.new_state()
    core.step(state, spend_events())
    assert state.tasks["spend_30d"].metrics.n == 5


def test_a_value_target_needs_a_delayed_label_and_a_regressor() -> None:
    with pytest.raises(ConfigError, match="regressor"):
        msgspec.structs.replace(SPEND, learner=LearnerConfig(kind="ftrl"))
    with pytest.raises(ConfigError, match="delayed"):
        TaskConfig(
            "x", on=["rate"], label=LabelConfig(kind="value", target="value"), learner=SPEND.learner
        )


def test_mae_and_rmse_reach_the_report_the_plot_and_the_stats(tmp_path: Path) -> None:
    from liveprofile.api import replay
    from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
    from liveprofile.report import plot_metrics
    from liveprofile.serving.metrics import StoreStats
    from liveprofile.store import open_store

    events = tmp_path / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=40, days=10, seed=3))
    tasks = [
        msgspec.structs.replace(t, label=msgspec.structs.replace(t.label, window="2d"))
        for t in (REPEAT, SPEND)
    ]
    cfg = PipelineConfig(tasks=tasks, run=RunConfig(metrics_window="1d"))
    summary = replay(events, store=tmp_path / "s.db", config=cfg, progress=False)
    spend = summary["tasks"]["spend_30d"]
    assert spend["n"] > 0 and spend["rmse"] >= spend["mae"] > 0.0 and spend["auc"] is None
    assert summary["tasks"]["repeat_30d"]["n"] == spend["n"]  # the same exposures
    plot_metrics(summary, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 0
    store = open_store(str(tmp_path / "s.db"), read_only=True)
    try:
        served = StoreStats(lambda: store).snapshot().tasks["spend_30d"]
    finally:
        store.close()
    assert served.summary["mae"] == spend["mae"] and served.windows[0]["rmse"] is not None


def test_the_read_api_serves_the_expected_spend_and_its_errors(tmp_path: Path) -> None:
    import json

    from cli_server import CliServer

    from liveprofile.api import replay
    from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl

    events = tmp_path / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=30, days=8, seed=4))
    spend = msgspec.structs.replace(SPEND, label=msgspec.structs.replace(SPEND.label, window="2d"))
    replay(events, store=tmp_path / "s.db", config=PipelineConfig(tasks=[spend]), progress=False)
    first = json.loads(events.read_text().splitlines()[0])
    server = CliServer(
        ["serve", "--store", str(tmp_path / "s.db")],
        {"LIVEPROFILE_READ_TOKEN": "crm-token"},
        tmp_path / "serve.log",
    )
    try:
        auth = {"Authorization": "Bearer crm-token"}
        params = {"user": first["user_id"], "item": first["item_id"], "task": "spend_30d"}
        r = server.client.get("/v1/score", params=params, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["score"] > 1.0  # money, not a probability
        stats = server.client.get("/v1/stats", headers=auth).json()
        assert stats["tasks"]["spend_30d"]["rmse"] >= stats["tasks"]["spend_30d"]["mae"] > 0.0
    finally:
        server.stop()

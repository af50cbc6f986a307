"""CRM tasks: a delayed label keyed by user (any conversion of the same user within the window:
repeat purchase, and churn as its negation), on the Python step, which takes every pipeline
with such a task."""

from __future__ import annotations

import pytest

from liveprofile.config import LabelConfig, PipelineConfig, RunConfig, TaskConfig
from liveprofile.engine.core import Core
from liveprofile.events import Event

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


@pytest.mark.parametrize("engine", ["python", "compiled"])
def test_any_purchase_of_the_same_user_within_the_window_is_a_repeat(engine: str) -> None:
    core = Core(PipelineConfig(tasks=[REPEAT], run=RunConfig(engine=engine)))
    assert core.compiled is None  # keyed by user: the Python step takes the pipeline
    state = core.new_state()
    core.step(state, EVENTS)
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

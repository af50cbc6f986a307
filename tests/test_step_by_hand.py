"""The step on small cases worked out by hand: what a profile, an item, a feature vector and a
pending example hold after a few events, with the decay computed on paper.

The step is written once (the kernel, :mod:`liveprofile.engine.kernel`); these cases pin its
semantics where no second engine does, and its batch, order and restart properties are tested
in ``test_engine_properties.py``. Half-lives of one day make every decayed number a power of
two: an event at ``T0 + k`` days weighs ``2 ** k`` relative to an anchor at ``T0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from liveprofile.config import (
    FeatureConfig,
    LabelConfig,
    PipelineConfig,
    ProfileConfig,
    RiskConfig,
    RunConfig,
    TaskConfig,
)
from liveprofile.engine.core import Core
from liveprofile.engine.lifecycle import StepResult
from liveprofile.engine.state import PipelineState
from liveprofile.events import Event
from liveprofile.profile.items import ItemStats, decode_item
from liveprofile.profile.state import Profile, ProfileUpdater

T0 = 1_704_067_200.0  # Monday 2024-01-01 00:00 UTC
DAY, HOUR = 86400.0, 3600.0
BOUGHT = TaskConfig(
    "bought", on=["view", "purchase"], label=LabelConfig(kind="type", positive=["purchase"])
)
CONVERT = TaskConfig(
    "convert",
    on=["view"],
    label=LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="1d"),
)
THREE = [
    Event("e1", "u1", "view", T0, item_id="i1", category="tea"),
    Event("e2", "u1", "purchase", T0 + DAY, item_id="i1", category="tea", value=4.0),
    Event("e3", "u1", "view", T0 + 2 * DAY, item_id="i2", category="coffee"),
]


def pipeline(*tasks: TaskConfig, **run: Any) -> Core:
    return Core(
        PipelineConfig(
            tasks=list(tasks),
            profile=ProfileConfig(counters_half_life="1d", interests_half_life="1d"),
            features=FeatureConfig(crosses=False),
            risk=RiskConfig(velocity=False),
            run=RunConfig(training_log="examples", **run),
        )
    )


def steps(core: Core, *batches: list[Event]) -> tuple[PipelineState, list[StepResult]]:
    state = core.new_state()
    return state, [core.step(state, batch) for batch in batches]


def replayed(
    events: Sequence[Event], size: int | None = None, **config: Any
) -> tuple[Core, PipelineState]:
    """The step (of a :class:`PipelineConfig` of ``config``) and its state after ``events``,
    in one batch or in batches of ``size``: the profiles the real step makes, for tests that
    read a profile after a few events."""
    core = Core(PipelineConfig(**config))
    state = core.new_state()
    size = size or max(len(events), 1)
    for k in range(0, len(events), size):
        core.step(state, events[k : k + size])
    return core, state


def profile_after(
    events: Sequence[Event], user: str = "u1", size: int | None = None, **config: Any
) -> tuple[ProfileUpdater, Profile]:
    """:func:`replayed`'s profile of ``user``, and the updater that reads it (``view``...)."""
    core, state = replayed(events, size, **config)
    return core.updater, state.profiles[user]


def items(outs: list[StepResult]) -> dict[str, ItemStats]:
    """The item statistics as the last batch that touched each stored them."""
    rows: dict[str, bytes] = {}
    for out in outs:
        rows.update(out.item_rows)
    return {item: decode_item(blob) for item, blob in rows.items()}


def features(core: Core, out: StepResult, k: int) -> dict[str, float]:
    """The features of the ``k``-th example ``out`` learned, by name."""
    assert out.learned is not None
    c = out.learned.columns
    got = dict(zip(c["feature_idx"][k], c["feature_val"][k], strict=True))
    names = core.features.names
    return {names.get(i, f"#{i}"): v for i, v in got.items()}


@pytest.mark.parametrize("split", [[3], [1, 1, 1], [2, 1]])
def test_a_profile_after_three_events_a_day_apart(split: list[int]) -> None:
    core = pipeline(BOUGHT)
    batches, at = [], 0
    for n in split:
        batches.append(THREE[at : at + n])
        at += n
    state, outs = steps(core, *batches)
    p = state.profiles["u1"]
    assert (p.n, p.first_ts, p.last_ts, p.anchor) == (3, T0, T0 + 2 * DAY, T0)
    assert p.counts == {"view": 2, "purchase": 1}
    # stored against the anchor: views at day 0 and 2 weigh 1 and 4, the purchase at day 1 weighs 2
    assert p.decayed == {"view": 5.0, "purchase": 2.0}
    view = core.updater.view(p, at=T0 + 2 * DAY)
    assert view["decayed_counts"] == {"view": 1.25, "purchase": 0.5}
    # interest weights: a view 1, a purchase 5 (the default weights)
    assert p.interests == {"tea": 1.0 + 5.0 * 2, "coffee": 4.0}
    assert view["interests"] == {"tea": 2.75, "coffee": 1.0}
    assert (p.purchases, p.monetary, p.last_purchase_ts) == (1, 4.0, T0 + DAY)
    assert (p.value_sum, p.value_n) == (0.0, 0)  # a purchase's value is money spent
    assert p.spend == {int((T0 + DAY) // DAY): 400}
    assert (p.examples, p.positives) == ({"bought": 3}, {"bought": 1})
    stats = items(outs)
    i1, i2 = stats["i1"], stats["i2"]
    assert (i1.n, i1.anchor, i1.last_ts, i1.category) == (2, T0, T0 + DAY, "tea")
    assert i1.popularity == 1.0 + 2.0  # item counts decay with the counters' half-life
    assert (i1.value_sum, i1.value_n) == (4.0, 1)  # an item counts every value
    assert (i1.examples, i1.positives) == ({"bought": 2}, {"bought": 1})
    assert (i2.n, i2.anchor, i2.popularity, i2.category) == (1, T0 + 2 * DAY, 1.0, "coffee")
    assert (i2.examples, i2.positives) == ({"bought": 1}, {})
    metrics = state.tasks["bought"].metrics
    assert metrics.n == 3


def test_the_features_of_an_event_are_read_from_the_profile_before_it() -> None:
    core = pipeline(BOUGHT)
    _, (out,) = steps(core, THREE)
    assert out.learned is not None and out.learned.columns["label"] == [0.0, 1.0, 0.0]
    first, second, third = (features(core, out, k) for k in range(3))
    # the first event: a new user and a new item
    assert {"bias", "user=u1", "type=view", "item=i1", "topic=tea"} <= set(first)
    assert first["user_new"] == first["item_new"] == first["u_new_task"] == 1.0
    assert first["i_new_task"] == 1.0
    assert "recency" not in first and "item_pop" not in first
    # the second: i1 seen once a day ago (popularity 1 decayed by half); the user's one event
    # was a view of tea (interest 1, decayed by half), its one example a negative
    assert "user_new" not in second and "item_new" not in second
    assert second["recency"] == pytest.approx(math.log1p(1.0))
    assert second["item_pop"] == pytest.approx(math.log1p(0.5))
    assert second["decayed=view"] == pytest.approx(math.log1p(0.5))
    assert second["affinity"] == 1.0  # all of the user's interest is in the event's topic
    assert second["interest"] == pytest.approx(math.log1p(0.5))
    assert second["top_interest=1"] == 1.0
    # shrunk rates: (positives + 0.5 * 2) / (examples + 2), less the prior 0.5
    assert second["u_rate"] == pytest.approx(1 / 3 - 0.5)
    assert second["i_rate"] == pytest.approx(1 / 3 - 0.5)
    # the third, at day 2: the profile as the purchase left it, a new item in a new topic
    assert third["type=view"] == third["item=i2"] == third["topic=coffee"] == 1.0
    assert third["recency"] == pytest.approx(math.log1p(1.0))
    assert third["decayed=view"] == pytest.approx(math.log1p(0.25))
    assert third["decayed=purchase"] == pytest.approx(math.log1p(0.5))
    assert third["affinity"] == 0.0 and third["top_interest=0"] == 1.0
    assert third["item_new"] == third["i_new_task"] == 1.0
    assert third["u_rate"] == pytest.approx(0.5 - 0.5)  # one positive in two
    assert third["hour=0"] == 1.0 and third["weekday=2"] == 1.0  # Wednesday midnight


def test_a_delayed_label_closes_at_the_window_with_its_conversion() -> None:
    core = pipeline(CONVERT)
    state, (first, second) = steps(
        core,
        [
            Event("v1", "u1", "view", T0, item_id="i1", category="tea"),
            Event("v2", "u1", "view", T0 + HOUR, item_id="i2", category="tea"),
            Event("p1", "u1", "purchase", T0 + 2 * HOUR, item_id="i1", value=2.0),
        ],
        [Event("v3", "u2", "view", T0 + 2 * DAY, item_id="i3")],
    )
    assert first.learned is not None and len(first.learned) == 0  # nothing closed yet
    log = second.learned
    assert log is not None
    c = log.columns
    assert list(
        zip(c["user"], c["key"], c["exposure_ts"], c["label_ts"], c["label"], strict=True)
    ) == [
        ("u1", "i1", T0, T0 + DAY, 1.0),
        ("u1", "i2", T0 + HOUR, T0 + HOUR + DAY, 0.0),
    ]
    p = state.profiles["u1"]
    assert (p.examples, p.positives) == ({"convert": 2}, {"convert": 1})
    assert p.key_outcome_rate("convert", "i1", 0.5, 2.0) == ((1 + 1) / (1 + 2), 1)
    assert p.key_outcome_rate("convert", "i2", 0.5, 2.0) == ((0 + 1) / (1 + 2), 1)
    stats = items([first, second])
    assert (stats["i1"].examples, stats["i1"].positives) == ({"convert": 1}, {"convert": 1})
    assert (stats["i2"].examples, stats["i2"].positives) == ({"convert": 1}, {})
    assert state.tasks["convert"].metrics.n == 2
    # the third view's example is still open; its user has a served score and no outcome
    u2 = state.profiles["u2"]
    assert "convert" in u2.scores and u2.examples == {}


def test_a_duplicate_and_an_event_behind_the_watermark() -> None:
    """A re-sent event id is counted once; a late event is applied at its own time (forward
    decay: the stored sums do not depend on arrival order)."""
    core = pipeline()
    late = [THREE[2], THREE[0], THREE[0], THREE[1]]
    state, (out,) = steps(core, late)
    assert (out.applied, out.duplicates) == (3, 1)
    p = state.profiles["u1"]
    assert p.anchor == T0 + 2 * DAY  # the first event applied set the anchor
    assert p.decayed == {"view": 1.0 + 0.25, "purchase": 0.5}
    assert p.first_ts == T0 and p.last_ts == T0 + 2 * DAY
    assert state.checkpoint.watermark == T0 + 2 * DAY

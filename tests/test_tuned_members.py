"""Other learner kinds as tuned members: a Hoeffding tree (or any River classifier) challenges
FTRL and OGD settings in shadow, is promoted when it does better (an interaction a linear model
cannot learn), keeps its state through a checkpoint, does not depend on batch boundaries, and is
refused where its learning would be unweighted (``feedback = "fnw"``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_compiled import TASKS, messed_up, run, synthetic

from liveprofile.checks.learner import LearnerFactory, check_learner, in_batches
from liveprofile.config import LabelConfig, LearnerConfig, PipelineConfig, TaskConfig
from liveprofile.errors import ConfigError, StateVersionError
from liveprofile.learn import dump_learner, load_learner, make_learner
from liveprofile.learn.base import PREDICT, PREDICT_LEARN, OpBatch, run_ops, weighs_fake_negatives
from liveprofile.learn.members import RiverMember
from liveprofile.learn.tuned import TunedLearner

TREE = {"kind": "hoeffding", "params": {"grace_period": 50}}


def _xor(n: int, seed: int) -> OpBatch:
    """The label is the XOR of two binary features, both skewed (so that each one alone tells
    something, and a greedy tree finds the first split): a linear model learns only that."""
    rng = np.random.default_rng(seed)
    ops = OpBatch()
    for _ in range(n):
        a, b = bool(rng.random() < 0.7), bool(rng.random() < 0.8)
        # a bias and two numeric features (a tree cannot split a one-hot feature: it is 1.0
        # where present, and absent otherwise)
        ops.add(PREDICT_LEARN, [1, 2, 3], [1.0, float(a), float(b)], float(a != b))
    return ops


def _tuned(**kw: object) -> TunedLearner:
    return TunedLearner(
        champion={"kind": "ftrl", "params": {"alpha": 0.2}},
        challengers=[TREE],
        min_examples=300,
        window=300,
        bits=10,
        **kw,  # type: ignore[arg-type]
    )


def test_a_hoeffding_tree_that_learns_what_ftrl_cannot_is_promoted() -> None:
    model = _tuned()
    preds = run_ops(model, _xor(3000, seed=1))
    tuning = model.tuning()
    assert tuning["champion"] == "hoeffding(grace_period=50)"
    first = tuning["decisions"][0]
    assert (first["action"], first["from"]) == ("promote", "ftrl(alpha=0.2)")
    assert first["loss_to"] < 0.99 * first["loss_from"]
    losses = tuning["recent_log_loss"]
    assert losses["ftrl(alpha=0.2)"] > 0.4 and losses["hoeffding(grace_period=50)"] < 0.05
    # the tree's predictions are served: far from 0.5 once it has split on both features
    assert np.mean(np.abs(preds[-500:] - 0.5)) > 0.3
    assert not weighs_fake_negatives(model)  # the tree learns unweighted


def test_batches_and_a_checkpoint_change_nothing() -> None:
    whole = _xor(1500, seed=2)
    a, b = _tuned(), _tuned()
    pa = run_ops(a, whole)
    pb: list[float] = []
    for ops in in_batches(whole, 97):
        pb.extend(run_ops(b, ops).tolist())
        b = load_learner(dump_learner(b))  # type: ignore[assignment]  # as a restart would
    np.testing.assert_array_equal(pa, np.array(pb))
    assert a.tuning() == b.tuning() and a.tuning()["decisions"]
    more = _xor(500, seed=3)
    np.testing.assert_array_equal(run_ops(a, more), run_ops(b, more))


def test_any_river_classifier_is_a_member_and_the_conformance_suite_passes() -> None:
    spec = {"kind": "river", "model": "linear_model.LogisticRegression", "params": {}}
    check_learner(
        LearnerFactory(
            lambda: TunedLearner(
                champion={"kind": "ogd", "params": {"lr": 0.1}},
                challengers=[spec, TREE],
                min_examples=40,
                window=40,
                bits=12,
            )
        )
    )
    model = TunedLearner(champion=spec, bits=8)
    assert model.tuning()["champion"] == "linear_model.LogisticRegression()"


def test_members_are_checked_and_a_river_checkpoint_needs_its_version() -> None:
    with pytest.raises(ValueError, match="tuned member"):
        TunedLearner(challengers=[{"kind": "river", "params": {}}], bits=8)  # no model
    with pytest.raises(ValueError, match="tuned member"):
        TunedLearner(challengers=[{"kind": "nope"}], bits=8)
    member = RiverMember("hoeffding", {})
    arrays = member.arrays()
    arrays["river"] = np.frombuffer(b"0.0.1", np.uint8)
    with pytest.raises(StateVersionError, match=r"River 0\.0\.1"):
        member.set_arrays(arrays)


def test_fake_negative_weights_refuse_a_river_member() -> None:
    learner = LearnerConfig(kind="tuned", params={"challengers": [TREE]})
    label = LabelConfig(kind="delayed", conversion=["purchase"], feedback="fnw")
    with pytest.raises(ConfigError, match="FTRL and OGD members"):
        TaskConfig("x", on=["view"], label=label, learner=learner)
    TaskConfig("x", on=["view"], label=label, learner=LearnerConfig(kind="tuned"))


def test_a_pipeline_tunes_with_a_tree_alike_whatever_the_batches() -> None:
    learner = LearnerConfig(
        kind="tuned", params={"challengers": [TREE], "min_examples": 200, "window": 200}
    )
    tasks = [TaskConfig(t.name, on=t.on, label=t.label, learner=learner) for t in TASKS]
    events = messed_up(synthetic(seed=7), seed=8)
    stores = {}
    for size in (500, 100_000):
        batches = [events[k : k + size] for k in range(0, len(events), size)]
        stores[size], _ = run(PipelineConfig(tasks=tasks), batches)
    python, compiled = stores[500], stores[100_000]
    probe = OpBatch()
    for k in range(300):
        probe.add(PREDICT, [k, 1000 + k % 7, 5000 + k % 31], [1.0, 1.0, 0.5], 0.0)
    for t in tasks:
        a = load_learner(python.get_meta(f"model/{t.name}") or b"")
        b = load_learner(compiled.get_meta(f"model/{t.name}") or b"")
        assert isinstance(a, TunedLearner) and isinstance(b, TunedLearner)
        # River's Gaussian estimators hold a random generator seeded from the OS (unused for
        # predictions), so the checkpoints differ in those bytes: compare what they do
        assert a.tuning() == b.tuning() and a.tuning()["examples"] > 0
        np.testing.assert_array_equal(run_ops(a, probe), run_ops(b, probe))
        for j in (0, 1):
            np.testing.assert_array_equal(
                run_ops(a.members[j], probe), run_ops(b.members[j], probe)
            )
    metrics = {e: [s.get_meta(f"metrics/{t.name}") for t in tasks] for e, s in stores.items()}
    assert metrics[500] == metrics[100_000]
    model = make_learner(learner, bits=10)
    assert isinstance(model, TunedLearner) and len(model.members) == 2

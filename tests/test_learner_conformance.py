"""One conformance suite for every learner, in the spirit of ``river/checks``.

The checks live in the package (:mod:`liveprofile.checks.learner`) so a third-party learner can
run them; here every check runs over every learner of ``LEARNERS``, each as a test of its own. To
add a learner, append a :class:`~liveprofile.checks.learner.LearnerFactory`.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from liveprofile.checks.learner import (
    LEARNER_CHECKS,
    LearnerFactory,
    assert_same_predictions,
    check_learner,
    one_by_one,
)
from liveprofile.config import LearnerConfig
from liveprofile.errors import ConfigError
from liveprofile.learn import FTRLProximal, LogisticOGD, dump_learner
from liveprofile.learn.base import PREDICT_LEARN, BatchLearner, OpBatch
from liveprofile.learn.registry import make_learner

LEARNERS = {
    "ftrl": LearnerFactory(lambda: FTRLProximal(alpha=0.3, bits=12), canonical_dump=True),
    "ogd": LearnerFactory(lambda: LogisticOGD(lr=0.1, bits=12), canonical_dump=True),
    "tuned": LearnerFactory(
        lambda: make_learner(
            LearnerConfig(
                kind="tuned",
                params={
                    "champion": {"kind": "ogd", "params": {"lr": 0.1}},
                    "challengers": [{"kind": "ftrl", "params": {"alpha": 0.3}}],
                    "min_examples": 40,
                    "window": 40,
                },
            ),
            bits=12,
        ),
        canonical_dump=True,
    ),
    "hoeffding": LearnerFactory(
        lambda: make_learner(LearnerConfig(kind="hoeffding")), always_both_labels=False
    ),
    "river_logreg": LearnerFactory(
        lambda: make_learner(LearnerConfig(kind="river", model="linear_model.LogisticRegression"))
    ),
}


@pytest.fixture(params=sorted(LEARNERS))
def case(request: pytest.FixtureRequest) -> LearnerFactory:
    return LEARNERS[request.param]


@pytest.mark.parametrize("check", LEARNER_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_learner_check(check: Callable[[LearnerFactory], None], case: LearnerFactory) -> None:
    check(case)


@pytest.mark.parametrize("name", ["ftrl", "ogd", "tuned"])
def test_builtin_learners_take_the_batched_path(name: str) -> None:
    assert isinstance(LEARNERS[name].make(), BatchLearner)


def test_check_learner_runs_the_whole_suite() -> None:
    check_learner(LEARNERS["ogd"])


class _Forgetful:
    """A learner whose checkpoint forgets what it learned: the suite must catch it."""

    def __init__(self) -> None:
        self.inner = LogisticOGD(lr=0.1, bits=12)

    def learn_one(self, x: dict[object, float], y: bool) -> None:
        self.inner.learn_one(x, y)

    def predict_proba_one(self, x: dict[object, float]) -> dict[bool, float]:
        return dict(self.inner.predict_proba_one(x))

    def __getstate__(self) -> dict[str, object]:
        return {}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.inner = LogisticOGD(lr=0.1, bits=12)


def test_check_learner_names_the_check_a_broken_learner_fails() -> None:
    with pytest.raises(AssertionError, match="check_dump_load_round_trip"):
        check_learner(LearnerFactory(_Forgetful))


def _colliding_ops() -> OpBatch:
    """Examples whose hashed indices collide (index 3 twice), as hashing makes them."""
    ops = OpBatch()
    for _ in range(6):
        ops.add(PREDICT_LEARN, [3, 3, 7], [1.0, 0.5, 1.0], 1.0)
        ops.add(PREDICT_LEARN, [5, 7], [1.0, 1.0], 0.0)
    return ops


def test_ftrl_fast_path_equals_dict_path_with_colliding_indices() -> None:
    ops = _colliding_ops()
    fast = FTRLProximal(bits=8).run_ops(ops)
    assert_same_predictions(fast, one_by_one(FTRLProximal(bits=8), ops), ops)


def test_ogd_fast_path_equals_dict_path_with_colliding_indices() -> None:
    # OGD's update is linear in the feature values, so colliding entries add up exactly.
    ops = _colliding_ops()
    fast = LogisticOGD(bits=8).run_ops(ops)
    assert_same_predictions(fast, one_by_one(LogisticOGD(bits=8), ops), ops)


def test_builtin_checkpoints_are_not_pickles() -> None:
    for learner in (FTRLProximal(bits=8), LogisticOGD(bits=8)):
        data = msgspec.msgpack.decode(dump_learner(learner))
        assert data["payload"] is None
        assert data["params"]["bits"] == 8


@pytest.mark.parametrize(
    "config",
    [
        LearnerConfig(kind="nope"),
        LearnerConfig(kind="river", model="linear_model.NoSuchModel"),
        LearnerConfig(kind="ftrl", params={"alpha": -1.0}),
        LearnerConfig(kind="ogd", params={"bogus": 1}),
    ],
)
def test_make_learner_rejects_bad_config(config: LearnerConfig) -> None:
    with pytest.raises(ConfigError, match=config.kind):
        make_learner(config, bits=8)

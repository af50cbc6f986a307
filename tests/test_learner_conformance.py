"""One conformance suite for every learner, in the spirit of ``river/checks``.

The checks live in the package (:mod:`liveprofile.checks.learner`) so a third-party learner can
run them; here every check runs over every learner of ``LEARNERS``, each as a test of its own. To
add a learner, append a :class:`~liveprofile.checks.learner.LearnerFactory`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import msgspec
import numpy as np
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
from liveprofile.learn.registry import load_learner, make_learner

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


def _algorithm_1(
    ops: list[tuple[list[int], list[float], float]], alpha: float, beta: float, l1: float, l2: float
) -> tuple[list[float], dict[int, float], dict[int, float]]:
    """FTRL-Proximal as McMahan et al. write it, in plain Python on dicts: each example's
    colliding indices added up in its order, then predict and learn."""
    z: dict[int, float] = {}
    n: dict[int, float] = {}
    preds = []
    for idx, val, y in ops:
        x: dict[int, float] = {}
        for i, v in zip(idx, val, strict=True):
            x[i] = x.get(i, 0.0) + v
        w = {}
        for i in x:
            zi, ni = z.get(i, 0.0), n.get(i, 0.0)
            w[i] = (
                0.0
                if abs(zi) <= l1
                else -(zi - math.copysign(l1, zi)) / ((beta + math.sqrt(ni)) / alpha + l2)
            )
        wx = max(-35.0, min(35.0, sum(w[i] * v for i, v in x.items())))
        p = 1.0 / (1.0 + math.exp(-wx))
        preds.append(p)
        for i, v in x.items():
            g = (p - y) * v
            ni = n.get(i, 0.0)
            sigma = (math.sqrt(ni + g * g) - math.sqrt(ni)) / alpha
            z[i] = z.get(i, 0.0) + g - sigma * w[i]
            n[i] = ni + g * g
    return preds, z, n


def test_ftrl_equals_algorithm_1_on_long_examples_full_of_collisions() -> None:
    # examples from 1 to 700 features over 1024 coordinates: the long ones collide a lot and
    # outgrow the learner's first scratch space
    rng = random.Random(5)
    ops = [
        ([rng.randrange(1024) for _ in range(size)], [rng.uniform(-1, 1) for _ in range(size)], y)
        for size, y in [(rng.choice([1, 3, 40, 100, 120, 700]), float(rng.random() < 0.4))
                        for _ in range(60)]
    ]  # fmt: skip
    batch = OpBatch()
    for idx, val, y in ops:
        batch.add(PREDICT_LEARN, idx, val, y)
    model = FTRLProximal(alpha=0.3, beta=1.0, l1=0.01, l2=0.5, bits=10)
    preds, z, n = _algorithm_1(ops, 0.3, 1.0, 0.01, 0.5)
    assert model.run_ops(batch).tolist() == pytest.approx(preds, rel=1e-12, abs=1e-15)
    assert model.z.tolist() == pytest.approx([z.get(i, 0.0) for i in range(1024)], rel=1e-9)
    assert model.n.tolist() == pytest.approx([n.get(i, 0.0) for i in range(1024)], rel=1e-12)


#: an FTRL checkpoint written before ``z`` and ``n`` were kept side by side in memory, by the
#: code of b679feb: ``FTRLProximal(alpha=0.5, l1=0.1, bits=4)`` after ``_ftrl_ops()``
_OLD_FTRL = bytes.fromhex(
    "86a6736368656d6102a46b696e64a46674726ca6706172616d7385a5616c706861cb3fe0000000000000a462"
    "657461cb3ff0000000000000a26c31cb3fb999999999999aa26c32cb3ff0000000000000a46269747304a661"
    "727261797382a17a94a7666c6f6174363410c480000000000000d0bfa05cba63f00efe3f9c82a2ed6986d2bf"
    "029c57363e06d23f0000000000000000fdf5314003a6ce3f000000000000d03f00000000000000006eab412f"
    "d3a9cb3fc212239bfb44fc3f00000000000000006e3f33291e75d3bf639074fb4c50d03f0000000000000000"
    "0faadb000c98cc3fe1345d1b5c15ce3fc0a16e94a7666c6f6174363410c480000000000000b03fd5dd12dac6"
    "2c0a40a954b787d772b53f99c6df690e4eb43f00000000000000001d08185aa35aad3f000000000000b03f00"
    "0000000000000064aed3a319eaa73f965d7f3d0b34154000000000000000000f1f2deb80a9b73fad122efa2c"
    "a2b03f00000000000000000f118d73e78ca93febca3bf51a48ac3fc0ad72697665725f76657273696f6ec0a7"
    "7061796c6f6164c0"
)


def _ftrl_ops() -> OpBatch:
    ops = OpBatch()
    for k in range(12):
        ops.add(PREDICT_LEARN, [1, (3 * k) % 16, 9, 9], [1.0, 0.5, 1.0, 0.25], float(k % 3 == 0))
    return ops


def test_an_ftrl_checkpoint_of_before_the_interleaved_layout_loads_and_is_written_back_alike() -> (
    None
):
    old = load_learner(_OLD_FTRL)
    assert isinstance(old, FTRLProximal)
    stored = msgspec.msgpack.decode(_OLD_FTRL)["arrays"]
    for name in ("z", "n"):  # dense: [dtype, size, values]
        assert old.arrays()[name].tolist() == np.frombuffer(stored[name][2], "<f8").tolist()
    assert old.zn[:, 0].tolist() == old.z.tolist() and old.zn[:, 1].tolist() == old.n.tolist()
    assert dump_learner(old) == _OLD_FTRL
    # the same learning gives the same bytes
    again = FTRLProximal(alpha=0.5, l1=0.1, bits=4)
    again.run_ops(_ftrl_ops())
    assert dump_learner(again) == _OLD_FTRL
    probe = OpBatch()
    probe.add(PREDICT_LEARN, [1, 9, 4], [1.0, 1.0, 1.0], 1.0)
    assert old.run_ops(probe).tolist() == again.run_ops(probe).tolist()


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

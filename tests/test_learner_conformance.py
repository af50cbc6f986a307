"""One conformance suite for every learner, in the spirit of ``river/checks``.

Every learner speaks River's protocol (``learn_one(x, y)``, ``predict_proba_one(x)``), survives a
save/load round trip through :func:`dump_learner`/:func:`load_learner`, is reproducible and does
not depend on the order of the features in the dict. To add a learner, append to ``LEARNERS``.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

import msgspec
import numpy as np
import pytest

from liveprofile.config import LearnerConfig
from liveprofile.errors import ConfigError, StateVersionError
from liveprofile.learn import FTRLProximal, Learner, LogisticOGD, dump_learner, load_learner
from liveprofile.learn.base import (
    LEARN,
    PREDICT,
    PREDICT_LEARN,
    BatchLearner,
    OpBatch,
    probability,
    run_ops,
)
from liveprofile.learn.registry import CHECKPOINT_SCHEMA, make_learner

X = dict[Hashable, float]


@dataclass(frozen=True)
class LearnerCase:
    name: str
    make: Callable[[], Learner]
    #: predict_proba_one gives both labels even before it has seen both (River trees do not)
    always_both_labels: bool
    #: equal states give equal checkpoint bytes (a River checkpoint is a pickle, which is not)
    canonical_dump: bool


LEARNERS = [
    LearnerCase("ftrl", lambda: FTRLProximal(alpha=0.3, bits=12), True, True),
    LearnerCase("ogd", lambda: LogisticOGD(lr=0.1, bits=12), True, True),
    LearnerCase("hoeffding", lambda: make_learner(LearnerConfig(kind="hoeffding")), False, False),
    LearnerCase(
        "river_logreg",
        lambda: make_learner(LearnerConfig(kind="river", model="linear_model.LogisticRegression")),
        True,
        False,
    ),
]


@pytest.fixture(params=LEARNERS, ids=lambda c: c.name)
def case(request: pytest.FixtureRequest) -> LearnerCase:
    return request.param  # type: ignore[no-any-return]


def stream(n: int, seed: int) -> Iterator[tuple[X, bool]]:
    """A separable stream: red things are positive; size and weight are noise.

    (No "colour=blue" twin: two equally good splits keep a Hoeffding tree from splitting for
    thousands of examples, which is River's tie rule, not what this suite checks.)
    """
    rng = random.Random(seed)
    for _ in range(n):
        red = rng.random() < 0.5
        x: X = {
            "colour=red": 1.0 if red else 0.0,
            "size": round(rng.uniform(0.0, 3.0), 3),
            "weight": round(rng.gauss(0.0, 1.0), 3),
        }
        yield x, red


def proba(learner: Learner, x: X) -> float:
    return probability(learner.predict_proba_one(x))


def warmed(case: LearnerCase, n: int = 300, seed: int = 1) -> Learner:
    learner = case.make()
    for x, y in stream(n, seed):
        learner.learn_one(x, y)
    return learner


def test_speaks_the_protocol(case: LearnerCase) -> None:
    learner = case.make()
    assert isinstance(learner, Learner)
    if case.name in ("ftrl", "ogd"):
        assert isinstance(learner, BatchLearner)


def test_does_not_mutate_inputs(case: LearnerCase) -> None:
    learner = case.make()
    for x, y in stream(60, seed=2):
        before = list(copy.deepcopy(x).items())
        learner.predict_proba_one(x)
        assert list(x.items()) == before
        learner.learn_one(x, y)
        assert list(x.items()) == before


def test_probabilities_are_well_formed(case: LearnerCase) -> None:
    learner = case.make()
    fresh = learner.predict_proba_one({"colour=red": 1.0})
    assert all(0.0 <= p <= 1.0 for p in fresh.values())
    if case.always_both_labels:
        assert set(fresh) == {False, True}
        assert fresh[True] == pytest.approx(0.5, abs=1e-12)
    seen = set()
    for x, y in stream(200, seed=3):
        learner.learn_one(x, y)
        seen.add(y)
        out = learner.predict_proba_one(x)
        assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in out.values())
        if case.always_both_labels or len(seen) == 2:
            assert set(out) == {False, True}
            assert abs(out[False] + out[True] - 1.0) <= 1e-9
    assert seen == {False, True}


def test_dump_load_round_trip(case: LearnerCase) -> None:
    learner = warmed(case)
    blob = dump_learner(learner)
    assert isinstance(blob, bytes)
    again = load_learner(blob)
    assert type(again) is type(learner)
    held_out = list(stream(100, seed=4))
    assert [again.predict_proba_one(x) for x, _ in held_out] == [
        learner.predict_proba_one(x) for x, _ in held_out
    ]
    # both continue to learn identically
    for x, y in stream(150, seed=5):
        assert proba(again, x) == proba(learner, x)
        learner.learn_one(x, y)
        again.learn_one(x, y)
    assert [proba(again, x) for x, _ in held_out] == [proba(learner, x) for x, _ in held_out]
    if case.canonical_dump:
        assert dump_learner(again) == dump_learner(learner)


def test_dump_of_a_fresh_learner_round_trips(case: LearnerCase) -> None:
    learner = case.make()
    again = load_learner(dump_learner(learner))
    x = {"colour=red": 1.0, "size": 1.0}
    assert again.predict_proba_one(x) == learner.predict_proba_one(x)


def test_deterministic(case: LearnerCase) -> None:
    a, b = case.make(), case.make()
    preds_a, preds_b = [], []
    for x, y in stream(300, seed=6):
        preds_a.append(proba(a, x))
        preds_b.append(proba(b, x))
        a.learn_one(x, y)
        b.learn_one(dict(x), y)
    assert preds_a == preds_b
    held_out = [x for x, _ in stream(50, seed=60)]
    assert [a.predict_proba_one(x) for x in held_out] == [b.predict_proba_one(x) for x in held_out]
    if case.canonical_dump:
        assert dump_learner(a) == dump_learner(b)


def test_independent_of_feature_order(case: LearnerCase) -> None:
    plain, shuffled = case.make(), case.make()
    rng = random.Random(7)
    for x, y in stream(300, seed=8):
        keys = list(x)
        rng.shuffle(keys)
        other = {k: x[k] for k in keys}
        assert proba(shuffled, other) == pytest.approx(proba(plain, x), rel=1e-9, abs=1e-12)
        plain.learn_one(x, y)
        shuffled.learn_one(other, y)


def test_learns_a_separable_stream(case: LearnerCase) -> None:
    learner = case.make()
    hits = []
    for x, y in stream(600, seed=9):
        hits.append((proba(learner, x) > 0.5) == y)
        learner.learn_one(x, y)
    last_half = hits[len(hits) // 2 :]
    assert sum(last_half) / len(last_half) > 0.8


def _random_ops(seed: int, n: int = 300, space: int = 1 << 30) -> OpBatch:
    """Predict/learn operations on hashed examples; distinct indices within each example."""
    rng = np.random.default_rng(seed)
    signal = rng.choice(space, size=20, replace=False)
    ops = OpBatch()
    for _ in range(n):
        k = int(rng.integers(2, 12))
        idx = rng.choice(signal, size=k, replace=False).tolist()
        val = rng.normal(size=k).round(3).tolist()
        y = float(sum(v for i, v in zip(idx, val, strict=True) if i % 2) > 0)
        kind = int(rng.choice([PREDICT, LEARN, PREDICT_LEARN], p=[0.2, 0.2, 0.6]))
        ops.add(kind, [int(i) for i in idx], val, y)
    return ops


def _one_by_one(learner: Learner, ops: OpBatch) -> list[float]:
    out = []
    for k, kind in enumerate(ops.kinds):
        x = ops.example(k)
        out.append(proba(learner, x) if kind & PREDICT else math.nan)
        if kind & LEARN:
            learner.learn_one(x, bool(ops.ys[k]))
    return out


def _assert_same(fast: np.ndarray, slow: list[float], ops: OpBatch) -> None:
    assert fast.shape == (len(ops),)
    for k, kind in enumerate(ops.kinds):
        if kind & PREDICT:
            assert abs(fast[k] - slow[k]) <= 1e-12, k
        else:
            assert math.isnan(fast[k])


def test_run_ops_equals_one_by_one(case: LearnerCase) -> None:
    ops = _random_ops(seed=10)
    batched, single = case.make(), case.make()
    fast = run_ops(batched, ops)
    slow = _one_by_one(single, ops)
    _assert_same(fast, slow, ops)
    x = {12345: 1.0, 678: -0.5}
    assert proba(batched, x) == pytest.approx(proba(single, x), abs=1e-12)


def test_run_ops_in_several_batches_equals_one_batch(case: LearnerCase) -> None:
    whole = _random_ops(seed=11, n=120)
    one = case.make()
    expected = run_ops(one, whole)
    parts = case.make()
    got = []
    for start in range(0, len(whole), 17):
        ops = OpBatch()
        for k in range(start, min(start + 17, len(whole))):
            s, e = whole.starts[k], whole.starts[k + 1]
            ops.add(whole.kinds[k], whole.idx[s:e], whole.val[s:e], whole.ys[k])
        got.extend(run_ops(parts, ops).tolist())
    np.testing.assert_array_equal(np.array(got), expected)


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
    _assert_same(fast, _one_by_one(FTRLProximal(bits=8), ops), ops)


def test_ogd_fast_path_equals_dict_path_with_colliding_indices() -> None:
    # OGD's update is linear in the feature values, so colliding entries add up exactly.
    ops = _colliding_ops()
    fast = LogisticOGD(bits=8).run_ops(ops)
    _assert_same(fast, _one_by_one(LogisticOGD(bits=8), ops), ops)


def _tampered(blob: bytes, **changes: object) -> bytes:
    data = msgspec.msgpack.decode(blob)
    data.update(changes)
    return msgspec.msgpack.encode(data)


@pytest.mark.parametrize("schema", [0, CHECKPOINT_SCHEMA - 1, CHECKPOINT_SCHEMA + 1, 255])
def test_load_refuses_another_schema(case: LearnerCase, schema: int) -> None:
    blob = dump_learner(warmed(case, n=30))
    with pytest.raises(StateVersionError, match="schema"):
        load_learner(_tampered(blob, schema=schema))


def test_load_refuses_another_river_version(case: LearnerCase) -> None:
    blob = dump_learner(warmed(case, n=30))
    data = msgspec.msgpack.decode(blob)
    if data["kind"] != "river":
        assert data["river_version"] is None  # built-in learners are not pickles
        return
    with pytest.raises(StateVersionError, match=re.escape("River 0.0.1")):
        load_learner(_tampered(blob, river_version="0.0.1"))


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

"""The learner conformance suite, in the spirit of ``river.checks``: runnable on any learner.

Every learner speaks River's protocol (``learn_one(x, y)``, ``predict_proba_one(x)``), does not
mutate its inputs, gives well-formed probabilities, survives a save/load round trip through
:func:`~liveprofile.learn.registry.dump_learner`/:func:`~liveprofile.learn.registry.load_learner`,
is reproducible, does not depend on the order of the features in the dict, learns a separable
stream, and gives the same results through the batched path
(:func:`~liveprofile.learn.base.run_ops`) as one by one. A learner that weighs fake negatives
(:func:`~liveprofile.learn.base.weighs_fake_negatives`) moves further on a weighted positive and
less far on a weighted negative than on plain ones, whatever the batches.

>>> from liveprofile.learn import FTRLProximal
>>> check_learner(LearnerFactory(lambda: FTRLProximal(alpha=0.3, bits=12), canonical_dump=True))
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.errors import StateVersionError
from liveprofile.learn.base import (
    FAKE_NEGATIVE,
    LEARN,
    PREDICT,
    PREDICT_LEARN,
    Learner,
    OpBatch,
    probability,
    run_ops,
    weighs_fake_negatives,
)
from liveprofile.learn.registry import CHECKPOINT_SCHEMA, dump_learner, load_learner

X = dict[Hashable, float]


@dataclass(frozen=True)
class LearnerFactory:
    """How to make the learner under test, and what it promises beyond the protocol."""

    #: a fresh learner; two calls give equal learners
    make: Callable[[], Learner]
    #: predict_proba_one gives both labels even before it has seen both (River trees do not)
    always_both_labels: bool = True
    #: equal states give equal checkpoint bytes (a River checkpoint is a pickle, which is not)
    canonical_dump: bool = False


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


def warmed(factory: LearnerFactory, n: int = 300, seed: int = 1) -> Learner:
    learner = factory.make()
    for x, y in stream(n, seed):
        learner.learn_one(x, y)
    return learner


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_speaks_the_protocol(factory: LearnerFactory) -> None:
    assert isinstance(factory.make(), Learner)


def check_does_not_mutate_inputs(factory: LearnerFactory) -> None:
    learner = factory.make()
    for x, y in stream(60, seed=2):
        before = list(copy.deepcopy(x).items())
        learner.predict_proba_one(x)
        assert list(x.items()) == before
        learner.learn_one(x, y)
        assert list(x.items()) == before


def check_probabilities_are_well_formed(factory: LearnerFactory) -> None:
    learner = factory.make()
    fresh = learner.predict_proba_one({"colour=red": 1.0})
    assert all(0.0 <= p <= 1.0 for p in fresh.values())
    if factory.always_both_labels:
        assert set(fresh) == {False, True}
        assert abs(fresh[True] - 0.5) <= 1e-12
    seen = set()
    for x, y in stream(200, seed=3):
        learner.learn_one(x, y)
        seen.add(y)
        out = learner.predict_proba_one(x)
        assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in out.values())
        if factory.always_both_labels or len(seen) == 2:
            assert set(out) == {False, True}
            assert abs(out[False] + out[True] - 1.0) <= 1e-9
    assert seen == {False, True}


def check_dump_load_round_trip(factory: LearnerFactory) -> None:
    learner = warmed(factory)
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
    if factory.canonical_dump:
        assert dump_learner(again) == dump_learner(learner)


def check_dump_of_a_fresh_learner_round_trips(factory: LearnerFactory) -> None:
    learner = factory.make()
    again = load_learner(dump_learner(learner))
    x: X = {"colour=red": 1.0, "size": 1.0}
    assert again.predict_proba_one(x) == learner.predict_proba_one(x)


def check_deterministic(factory: LearnerFactory) -> None:
    a, b = factory.make(), factory.make()
    preds_a, preds_b = [], []
    for x, y in stream(300, seed=6):
        preds_a.append(proba(a, x))
        preds_b.append(proba(b, x))
        a.learn_one(x, y)
        b.learn_one(dict(x), y)
    assert preds_a == preds_b
    held_out = [x for x, _ in stream(50, seed=60)]
    assert [a.predict_proba_one(x) for x in held_out] == [b.predict_proba_one(x) for x in held_out]
    if factory.canonical_dump:
        assert dump_learner(a) == dump_learner(b)


def check_independent_of_feature_order(factory: LearnerFactory) -> None:
    plain, shuffled = factory.make(), factory.make()
    rng = random.Random(7)
    for x, y in stream(300, seed=8):
        keys = list(x)
        rng.shuffle(keys)
        other = {k: x[k] for k in keys}
        assert _close(proba(shuffled, other), proba(plain, x))
        plain.learn_one(x, y)
        shuffled.learn_one(other, y)


def check_learns_a_separable_stream(factory: LearnerFactory) -> None:
    learner = factory.make()
    hits = []
    for x, y in stream(600, seed=9):
        hits.append((proba(learner, x) > 0.5) == y)
        learner.learn_one(x, y)
    last_half = hits[len(hits) // 2 :]
    assert sum(last_half) / len(last_half) > 0.8


def random_ops(seed: int, n: int = 300, space: int = 1 << 30) -> OpBatch:
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


def in_batches(whole: OpBatch, size: int) -> Iterator[OpBatch]:
    """``whole`` cut into consecutive batches of at most ``size`` operations.

    >>> [len(b) for b in in_batches(random_ops(seed=1, n=5), 2)]
    [2, 2, 1]
    """
    for start in range(0, len(whole), size):
        part = OpBatch()
        for k in range(start, min(start + size, len(whole))):
            s, e = whole.starts[k], whole.starts[k + 1]
            part.add(whole.kinds[k], list(whole.idx[s:e]), list(whole.val[s:e]), whole.ys[k])
        yield part


def one_by_one(learner: Learner, ops: OpBatch) -> list[float]:
    """The predictions of ``ops`` run through ``learn_one``/``predict_proba_one`` (NaN for
    learn-only operations)."""
    out = []
    for k, kind in enumerate(ops.kinds):
        x = ops.example(k)
        out.append(proba(learner, x) if kind & PREDICT else math.nan)
        if kind & LEARN:
            learner.learn_one(x, bool(ops.ys[k]))
    return out


def assert_same_predictions(fast: npt.NDArray[np.float64], slow: list[float], ops: OpBatch) -> None:
    """``fast`` (from :func:`run_ops`) equals ``slow`` (from :func:`one_by_one`) to 1e-12."""
    assert fast.shape == (len(ops),)
    for k, kind in enumerate(ops.kinds):
        if kind & PREDICT:
            assert abs(fast[k] - slow[k]) <= 1e-12, k
        else:
            assert math.isnan(fast[k])


def check_run_ops_equals_one_by_one(factory: LearnerFactory) -> None:
    ops = random_ops(seed=10)
    batched, single = factory.make(), factory.make()
    fast = run_ops(batched, ops)
    slow = one_by_one(single, ops)
    assert_same_predictions(fast, slow, ops)
    x: X = {12345: 1.0, 678: -0.5}
    assert abs(proba(batched, x) - proba(single, x)) <= 1e-12


def check_run_ops_in_several_batches_equals_one_batch(factory: LearnerFactory) -> None:
    whole = random_ops(seed=11, n=120)
    expected = run_ops(factory.make(), whole)
    parts = factory.make()
    got = [p for ops in in_batches(whole, 17) for p in run_ops(parts, ops).tolist()]
    np.testing.assert_array_equal(np.array(got), expected)


def check_fake_negative_weights(factory: LearnerFactory) -> None:
    """A learner that says it honours ``FAKE_NEGATIVE`` weighs a positive by ``1 + p`` (> 1)
    and a negative by ``(1 - p)(1 + p)`` (< 1); batches change nothing."""
    learner = factory.make()
    if not weighs_fake_negatives(learner):
        return
    run_ops(learner, random_ops(seed=12))
    ops = random_ops(seed=13, n=1)
    x = ops.example(0)
    p0 = proba(learner, x)
    assert 0.0 < p0 < 1.0
    for y in (0.0, 1.0):
        moved = []
        for flags in (0, FAKE_NEGATIVE):
            one = copy.deepcopy(learner)
            step = OpBatch()
            step.add(LEARN | flags, list(ops.idx), list(ops.val), y)
            run_ops(one, step)
            moved.append(abs(proba(one, x) - p0))
        plain, weighted = moved
        assert (weighted > plain) if y else (weighted < plain), (y, plain, weighted)
    whole = random_ops(seed=14, n=120)
    flagged = np.frombuffer(whole.kinds, np.int8)
    flagged[::2] |= np.where(flagged[::2] & LEARN, FAKE_NEGATIVE, 0).astype(np.int8)
    expected = run_ops(factory.make(), whole)
    parts = factory.make()
    got = [p for part in in_batches(whole, 17) for p in run_ops(parts, part).tolist()]
    np.testing.assert_array_equal(np.array(got), expected)
    assert not np.array_equal(expected, run_ops(factory.make(), random_ops(seed=14, n=120)))


def _tampered(blob: bytes, **changes: object) -> bytes:
    data = msgspec.msgpack.decode(blob)
    data.update(changes)
    return msgspec.msgpack.encode(data)


def check_load_refuses_another_schema(factory: LearnerFactory) -> None:
    blob = dump_learner(warmed(factory, n=30))
    for schema in (0, CHECKPOINT_SCHEMA - 1, CHECKPOINT_SCHEMA + 1, 255):
        try:
            load_learner(_tampered(blob, schema=schema))
        except StateVersionError as exc:
            assert "schema" in str(exc)
        else:
            raise AssertionError(f"a checkpoint of schema {schema} was loaded")


def check_load_refuses_another_river_version(factory: LearnerFactory) -> None:
    blob = dump_learner(warmed(factory, n=30))
    data = msgspec.msgpack.decode(blob)
    if data["kind"] != "river":
        assert data["river_version"] is None  # built-in learners are not pickles
        return
    try:
        load_learner(_tampered(blob, river_version="0.0.1"))
    except StateVersionError as exc:
        assert "River 0.0.1" in str(exc)
    else:
        raise AssertionError("a checkpoint of River 0.0.1 was loaded")


#: every check, in the order :func:`check_learner` runs them
LEARNER_CHECKS: list[Callable[[LearnerFactory], None]] = [
    check_speaks_the_protocol,
    check_does_not_mutate_inputs,
    check_probabilities_are_well_formed,
    check_dump_load_round_trip,
    check_dump_of_a_fresh_learner_round_trips,
    check_deterministic,
    check_independent_of_feature_order,
    check_learns_a_separable_stream,
    check_run_ops_equals_one_by_one,
    check_run_ops_in_several_batches_equals_one_batch,
    check_fake_negative_weights,
    check_load_refuses_another_schema,
    check_load_refuses_another_river_version,
]


def check_learner(factory: LearnerFactory) -> None:
    """Run every check; raises :class:`AssertionError` naming the first check that fails."""
    for check in LEARNER_CHECKS:
        try:
            check(factory)
        except AssertionError as exc:
            raise AssertionError(f"{check.__name__}: {exc}") from exc


__all__ = ["LEARNER_CHECKS", "LearnerFactory", "check_learner"]

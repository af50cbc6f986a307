"""Self-tuning: promotion of a clearly better challenger, rollback of a promotion that then does
worse, determinism, save/load, and the tuned learner inside the engine."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from test_compiled import TASKS, assert_same, chunks, messed_up, run, synthetic

from liveprofile.checks.learner import LearnerFactory, check_learner, in_batches
from liveprofile.config import LearnerConfig, PipelineConfig
from liveprofile.engine.local import LocalRunner, RunStats
from liveprofile.errors import ConfigError
from liveprofile.events.sources import Batch
from liveprofile.learn import dump_learner, load_learner, make_learner
from liveprofile.learn.base import LEARN, PREDICT, PREDICT_LEARN, OpBatch, run_ops
from liveprofile.learn.registry import tuning_of_checkpoint
from liveprofile.learn.tuned import TunedLearner, tuning_of
from liveprofile.serving.metrics import StoreStats
from liveprofile.store import SQLiteStore
from liveprofile.store.layout import check_config, model_meta


def _stream(n: int, seed: int, flip_at: tuple[int, ...] = (), noise: float = 0.1) -> OpBatch:
    """Examples with one informative feature among noise; the label's sign flips at ``flip_at``."""
    rng = np.random.default_rng(seed)
    ops = OpBatch()
    sign = 1
    for k in range(n):
        if k in flip_at:
            sign = -sign
        red = bool(rng.random() < 0.5)
        y = red if sign > 0 else not red
        if rng.random() < noise:
            y = not y
        idx = [1, 2 if red else 3, int(rng.integers(10, 200))]
        ops.add(PREDICT_LEARN, idx, [1.0, 1.0, 1.0], float(y))
    return ops


def _bad_start(**kw: object) -> TunedLearner:
    return TunedLearner(
        champion={"kind": "ogd", "params": {"lr": 1e-5}},
        challengers=[
            {"kind": "ftrl", "params": {"alpha": 0.1}},
            {"kind": "ftrl", "params": {"alpha": 0.5}},
        ],
        bits=10,
        **kw,  # type: ignore[arg-type]
    )


def test_a_clearly_better_challenger_is_promoted_with_its_figures() -> None:
    model = _bad_start(min_examples=200, window=200, margin=0.05)
    preds = run_ops(model, _stream(2000, seed=1))
    tuning = model.tuning()
    assert tuning["champion"].startswith("ftrl")
    first = tuning["decisions"][0]
    assert first["action"] == "promote" and first["from"] == "ogd(lr=1e-05)"
    assert first["examples"] == 200  # the first moment a decision is allowed
    assert first["loss_to"] < 0.95 * first["loss_from"]
    # the champion's predictions are served: after promotion they are the FTRL's, not ~0.5
    assert np.mean(np.abs(preds[-500:] - 0.5)) > 0.2
    assert tuning["recent_log_loss"]["ogd(lr=1e-05)"] > 0.69


def test_no_promotion_within_the_margin() -> None:
    same = {"kind": "ftrl", "params": {"alpha": 0.3}}
    model = TunedLearner(champion=same, challengers=[same], min_examples=50, bits=10)
    run_ops(model, _stream(1000, seed=2))
    assert model.tuning()["decisions"] == []


def test_a_promotion_that_then_does_worse_is_rolled_back() -> None:
    # On a clean stream the fast learner wins and is promoted. When the label flips, its
    # confident weights are wrong: the cautious one is promoted after one bad example, then the
    # fast one adapts within a few examples and the promotion is rolled back.
    model = TunedLearner(
        champion={"kind": "ogd", "params": {"lr": 0.05}},
        challengers=[{"kind": "ogd", "params": {"lr": 2.0}}],
        margin=0.05,
        min_examples=300,
        window=30,
        bits=10,
    )
    run_ops(model, _stream(2500, seed=3, flip_at=(2000,), noise=0.0))
    decisions = model.tuning()["decisions"]
    steps = [(d["examples"], d["action"], d["from"], d["to"]) for d in decisions]
    assert steps == [
        (300, "promote", "ogd(lr=0.05)", "ogd(lr=2.0)"),
        (2001, "promote", "ogd(lr=2.0)", "ogd(lr=0.05)"),
        (2012, "rollback", "ogd(lr=0.05)", "ogd(lr=2.0)"),
    ]
    rollback = decisions[2]
    assert rollback["loss_from"] > rollback["loss_to"]
    assert model.tuning()["champion"] == "ogd(lr=2.0)"


def test_tuned_is_deterministic_and_batching_does_not_change_decisions() -> None:
    whole = _stream(1500, seed=4, flip_at=(700,))
    a, b = _bad_start(min_examples=100, window=100), _bad_start(min_examples=100, window=100)
    pa = run_ops(a, whole)
    pb = [p for ops in in_batches(whole, 97) for p in run_ops(b, ops).tolist()]
    np.testing.assert_array_equal(pa, np.array(pb))
    assert a.tuning() == b.tuning() and a.tuning()["decisions"]
    assert dump_learner(a) == dump_learner(b)


def test_save_load_keeps_champion_losses_and_decisions() -> None:
    model = _bad_start(min_examples=100, window=100)
    run_ops(model, _stream(800, seed=5))
    again = load_learner(dump_learner(model))
    assert isinstance(again, TunedLearner)
    assert again.tuning() == model.tuning() and model.tuning()["decisions"]
    assert dump_learner(again) == dump_learner(model)
    more = _stream(600, seed=6, flip_at=(100,))
    np.testing.assert_array_equal(run_ops(again, more), run_ops(model, more))
    assert again.tuning() == model.tuning()


def test_predict_only_operations_teach_nothing() -> None:
    model = _bad_start(min_examples=10, window=10)
    ops = OpBatch()
    for _ in range(50):
        ops.add(PREDICT, [1, 2], [1.0, 1.0], 1.0)
    assert np.all(run_ops(model, ops) == 0.5)
    assert model.tuning()["examples"] == 0 and model.tuning()["decisions"] == []


def test_tuned_passes_the_learner_conformance_suite() -> None:
    check_learner(
        LearnerFactory(lambda: _bad_start(min_examples=40, window=40), canonical_dump=True)
    )


def test_make_learner_builds_tuned_from_config() -> None:
    config = LearnerConfig(
        kind="tuned",
        params={
            "champion": {"kind": "ftrl", "params": {"alpha": 0.01}},
            "challengers": [{"kind": "ogd", "params": {"lr": 0.1}}],
            "margin": 0.02,
        },
    )
    model = make_learner(config, bits=12)
    assert isinstance(model, TunedLearner) and model.bits == 12
    assert tuning_of(model)["tuning"]["champion"] == "ftrl(alpha=0.01)"
    with pytest.raises(ConfigError, match="tuned"):
        make_learner(LearnerConfig(kind="tuned", params={"challengers": [{"kind": "svm"}]}))
    with pytest.raises(ConfigError, match="tuned"):
        make_learner(LearnerConfig(kind="tuned", params={"margin": 2.0}))


TUNED = LearnerConfig(
    kind="tuned",
    params={
        "champion": {"kind": "ogd", "params": {"lr": 1e-4}},
        "challengers": [{"kind": "ftrl", "params": {"alpha": 0.3}}],
        "min_examples": 20,
        "window": 20,
    },
)


@pytest.mark.parametrize("size", [37, 100_000])
def test_tuning_does_not_depend_on_the_batches(size: int) -> None:
    tasks = [msgspec.structs.replace(t, learner=TUNED) for t in TASKS]
    events = messed_up(synthetic(seed=6), seed=7)
    core = assert_same(chunks(events, size), tasks=tasks)
    store, _ = run(core.config, chunks(events, size))
    promoted = 0
    for task in tasks:
        tuning = tuning_of_checkpoint(store.get_meta(model_meta(task.name)))["tuning"]
        promoted += any(d["action"] == "promote" for d in tuning["decisions"])
    assert promoted >= 2  # the bad starting learning rate is replaced on most tasks


def test_the_report_and_the_stats_show_the_decisions(tmp_path: Path) -> None:
    cfg = PipelineConfig(tasks=[msgspec.structs.replace(TASKS[0], learner=TUNED)])
    store = SQLiteStore(tmp_path / "s.db")
    runner = LocalRunner(cfg, store, tmp_path / "dead")
    check_config(store, cfg)
    for k, batch in enumerate(chunks(messed_up(synthetic(seed=6), seed=7), 400)):
        runner.process("src", Batch(events=batch, offset=k + 1))
    report = runner.summary(RunStats())["tasks"]["like"]["tuning"]
    runner.close()
    assert report["decisions"][0]["to"] == "ftrl(alpha=0.3)"
    served = StoreStats(lambda: SQLiteStore(tmp_path / "s.db")).snapshot().tasks["like"]
    assert served.summary["tuning"] == report


def test_a_delayed_example_is_scored_on_its_prediction_at_exposure() -> None:
    model = TunedLearner(champion={"kind": "ftrl", "params": {"alpha": 0.5}}, window=1, bits=10)
    ops = OpBatch()
    ops.add(PREDICT, [1, 2], [1.0, 1.0])  # the exposure: predicted, label unknown
    for _ in range(20):
        ops.add(PREDICT_LEARN, [1, 2, 3], [1.0, 1.0, 1.0], 1.0)  # other examples teach a lot
    ops.add(LEARN, [1, 2], [1.0, 1.0], 1.0)  # the exposure's label comes
    run_ops(model, ops)
    assert model.tuning()["recent_log_loss"]["ftrl(alpha=0.5)"] == pytest.approx(np.log(2.0))
    # without the exposure held, the same example is scored on the trained model
    fresh = TunedLearner(champion={"kind": "ftrl", "params": {"alpha": 0.5}}, window=1, bits=10)
    late = OpBatch()
    for k in range(1, len(ops)):
        s, e = ops.starts[k], ops.starts[k + 1]
        late.add(ops.kinds[k], list(ops.idx[s:e]), list(ops.val[s:e]), ops.ys[k])
    run_ops(fresh, late)
    assert fresh.tuning()["recent_log_loss"]["ftrl(alpha=0.5)"] < 0.3


def test_readme_example_builds_a_tuned_learner() -> None:
    from test_readme import _blocks

    (block,) = [b for b in _blocks("toml") if 'kind = "tuned"' in b]
    config = PipelineConfig.from_toml(block)
    model = make_learner(config.tasks[0].learner, bits=8)
    assert isinstance(model, TunedLearner) and len(model.members) == 3
    assert model.tuning()["champion"] == "ogd(lr=0.0001)" and model.window == 5000


def test_explanations_use_the_champions_weights() -> None:
    from liveprofile.serving.recommend import feature_weights

    model = _bad_start(min_examples=100, window=100)
    run_ops(model, _stream(600, seed=8))
    assert model.tuning()["champion"].startswith("ftrl")
    got = feature_weights(model, [1, 2, 3])
    assert got is not None and np.any(got != 0.0)
    np.testing.assert_array_equal(got, feature_weights(model.champion, [1, 2, 3]))

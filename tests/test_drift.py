"""Drift detection on the prequential loss: the detector equals River's Page-Hinkley, finds the
synthetic shop's planted drift soon after it and not before, gives the same events whatever the
batch size or engine, and its state survives a store round trip."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest
from river import drift as river_drift

import liveprofile
from liveprofile.config import PipelineConfig, RunConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.errors import StateVersionError
from liveprofile.learn import drift
from liveprofile.learn.metrics import Prequential

#: a planted drift the convert model's loss shows: every user draws new, peaked preferences
STRONG = {"drift_fraction": 1.0, "preference_concentration": 0.1}
STRONG_AFFINITY = {"purchase_affinity": 5.0, "cart_affinity": 5.0}


def _river_detections(losses: list[float]) -> list[int]:
    ph = river_drift.PageHinkley(
        min_instances=drift.MIN_INSTANCES,
        delta=drift.DELTA,
        threshold=drift.THRESHOLD,
        alpha=drift.ALPHA,
        mode="up",
    )
    out = []
    for k, x in enumerate(losses):
        ph.update(x)
        if ph.drift_detected:
            out.append(k)
    return out


def test_detector_is_rivers_page_hinkley() -> None:
    rng = np.random.default_rng(7)
    losses = np.concatenate(
        [rng.exponential(0.3, 5000), rng.exponential(0.6, 3000), rng.exponential(0.2, 3000)]
    )
    losses = np.concatenate([losses, rng.exponential(0.9, 4000)]).tolist()
    state = drift.fresh_state()
    ours = [k for k, x in enumerate(losses) if drift.page_hinkley(state, drift.SETTINGS, x) > 0]
    assert ours == _river_detections(losses)
    assert len(ours) >= 2  # two rises, both seen


def test_record_and_record_many_raise_the_same_events() -> None:
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0.05, 0.3, 3000), rng.uniform(0.6, 0.95, 2000)])
    y = rng.uniform(size=len(p)) < 0.2
    ts = np.arange(len(p), dtype=np.float64) * 60.0
    one, many = Prequential(), Prequential()
    for k in range(len(p)):
        one.record(float(p[k]), bool(y[k]), float(ts[k]))
    for chunk in np.array_split(np.arange(len(p)), 7):
        many.record_many(p[chunk], y[chunk], ts[chunk])
    assert one.summary()["drift"] == many.summary()["drift"]
    assert one.drift.count >= 1
    assert one.to_bytes() == many.to_bytes()


def test_stored_state_round_trip_and_versions() -> None:
    m = Prequential(window=3600.0)
    for k in range(3000):
        m.record(0.1 if k < 2000 else 0.9, False, float(k))
    back = Prequential.from_bytes(m.to_bytes())
    assert back.drift.count == m.drift.count >= 1
    assert back.drift.state.tolist() == m.drift.state.tolist()
    # a version-1 blob (no drift state) still reads, with a fresh detector
    old = msgspec.msgpack.decode(m.to_bytes())
    del old["version"], old["drift"]
    v1 = Prequential.from_bytes(msgspec.msgpack.encode(old))
    assert v1.n == m.n and v1.drift.count == 0
    old["version"] = 99
    with pytest.raises(StateVersionError, match="version 99"):
        Prequential.from_bytes(msgspec.msgpack.encode(old))


def _replay(tmp: Path, name: str, synthetic: SyntheticConfig, run: RunConfig) -> dict:
    events = tmp / "events.jsonl"
    if not events.exists():
        write_jsonl(events, synthetic)
    config = PipelineConfig(run=run)
    return liveprofile.replay(events, store=tmp / f"{name}.db", config=config, progress=False)


def test_planted_drift_is_detected_soon_after_and_not_before(tmp_path: Path) -> None:
    synthetic = SyntheticConfig(seed=0, **STRONG, **STRONG_AFFINITY)
    big = _replay(tmp_path, "big", synthetic, RunConfig())
    found = big["tasks"]["convert"]["drift"]
    assert found["detector"] == "page_hinkley"
    times = [e["ts"] for e in found["events"]]
    assert times, "the planted drift was not detected"
    assert all(t >= synthetic.drift_ts for t in times), "false alarm before the drift"
    first = min(times)
    assert first - synthetic.drift_ts < 12 * 3600  # within hours of event time
    # the same events whatever the batch size
    small = _replay(tmp_path, "small", synthetic, RunConfig(batch_size=777))
    assert small["tasks"]["convert"]["drift"] == found
    other = _replay(tmp_path, "other", synthetic, RunConfig(batch_size=5000))
    assert other["tasks"]["convert"]["drift"] == found


def test_resumed_replay_detects_the_same(tmp_path: Path) -> None:
    synthetic = SyntheticConfig(seed=1, **STRONG, **STRONG_AFFINITY)
    events = tmp_path / "events.jsonl"
    write_jsonl(events, synthetic)
    whole = liveprofile.replay(events, store=tmp_path / "whole.db", progress=False)
    store = tmp_path / "parts.db"
    first = liveprofile.replay(events, store=store, limit=whole["events"] // 2, progress=False)
    assert first["events"] < whole["events"]
    resumed = liveprofile.replay(events, store=store, progress=False)
    assert resumed["tasks"]["convert"]["drift"] == whole["tasks"]["convert"]["drift"]
    assert whole["tasks"]["convert"]["drift"]["detections"] >= 1


def test_generate_sets_shop_numbers_and_refuses_others(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def generate(*params: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "liveprofile.cli", "generate", "--out", str(tmp_path / "e")]
        args = [*cmd, "--users", "5", "--days", "2", *params]
        env = {**os.environ, "COLUMNS": "200"}  # one line per message
        return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)

    done = generate("--param", "drift_fraction=1", "--param", "drift_at=0.25")
    assert done.returncode == 0, done.stderr
    assert f"drift at {SyntheticConfig(days=2, drift_at=0.25).drift_ts:.0f}" in done.stderr
    done = generate("--param", "items=3")
    assert done.returncode != 0 and "not a shop setting" in done.stdout + done.stderr
    done = generate("--param", "drift_at=soon")
    assert done.returncode != 0 and "expected NAME=NUMBER" in done.stdout + done.stderr

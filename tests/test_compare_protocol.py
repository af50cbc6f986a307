"""The comparison benchmark refuses a stream too short for a delayed task.

``benchmarks/compare.py --cj-limit 100000`` printed AUC 0.5 for every system: 100,000 Complete
Journey transactions span 24.4 days, and the 14-day ``repurchase`` label of an exposure is
known only 14 days after it, so every exposure labelled within the stream was scored before any
label was learned. These tests replay the synthetic shop through the real step with a recorder
as the learner (``benchmarks/streams.py``), run the real FTRL on the operations, and check that
the benchmark's guard refuses exactly the stream whose every scored prediction is the prior.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.events.sources import JsonlSource
from liveprofile.learn.base import PREDICT
from liveprofile.learn.linear import FTRLProximal

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
import streams


def replay(tmp_path: Path, days: int) -> tuple[np.ndarray, np.ndarray, streams.DelayedLabels]:
    """The FTRL predictions and true labels of the ``repurchase`` exposures of ``days`` of the
    synthetic shop (NaN labels: window still open at the end), and the derived labels."""
    config = PipelineConfig()
    task = next(t for t in config.tasks if t.name == "repurchase")
    path = tmp_path / f"shop{days}.jsonl"
    write_jsonl(path, SyntheticConfig(users=60, items=40, categories=4, days=days, seed=3))
    source = JsonlSource(path)
    ops = streams.capture(config, source)[task.name]
    events = streams.read_events(source, config.run.batch_size)
    found = streams.delayed_labels(events, task)
    streams.check_labels(ops, found)
    out = FTRLProximal(bits=config.features.bits).run_ops(ops)
    preds = out[np.asarray(ops.kinds) == PREDICT]
    span = streams.span_s(source, config.run.batch_size)
    assert span == max(e.ts for e in events) - min(e.ts for e in events)
    return preds, found.labels(), found


def test_a_stream_under_two_windows_is_refused_since_every_scored_prediction_is_the_prior(
    tmp_path: Path,
) -> None:
    preds, labels, found = replay(tmp_path, days=20)
    scored = ~np.isnan(labels)
    assert scored.sum() > 100 and 0 < labels[scored].sum() < scored.sum()  # both classes
    assert np.all(preds[scored] == 0.5)  # what made every system's AUC 0.5
    assert streams.informed(found) == 0
    task = next(t for t in PipelineConfig().tasks if t.name == "repurchase")
    with pytest.raises(streams.TooShort, match="more than 28 days"):
        streams.refuse_uninformed(task, 20 * 86400.0)
    with pytest.raises(streams.TooShort):  # the derived labels say so whatever the span
        streams.refuse_uninformed(task, 40 * 86400.0, found)


def test_a_stream_over_two_windows_is_measured(tmp_path: Path) -> None:
    preds, labels, found = replay(tmp_path, days=40)
    scored = ~np.isnan(labels)
    assert streams.informed(found) > 0
    assert np.any(preds[scored] != 0.5)
    task = next(t for t in PipelineConfig().tasks if t.name == "repurchase")
    streams.refuse_uninformed(task, 40 * 86400.0, found)  # no error

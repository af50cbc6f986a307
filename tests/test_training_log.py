"""The training log: the examples as the models learned them, as Parquet, the same whatever the
batches, and point-in-time correct: rebuilding an example's features from a replay of the stream
up to its exposure (nothing after it) gives the logged features."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
import pytest
from test_compiled import config, messed_up, synthetic
from test_exposures import repeated

from liveprofile.config import PipelineConfig
from liveprofile.engine.core import Core
from liveprofile.engine.local import LocalRunner
from liveprofile.events import Event
from liveprofile.events.sources import Batch
from liveprofile.learn.examples import read_examples
from liveprofile.store import SQLiteStore

BATCH = 150


def logged(events: list[Event], folder: Path, size: int = BATCH) -> list[dict[str, object]]:
    base = config()
    cfg = msgspec.structs.replace(
        base, run=msgspec.structs.replace(base.run, training_log=str(folder / "examples"))
    )
    runner = LocalRunner(cfg, SQLiteStore(folder / "s.db"), folder / "dead")
    for k in range(0, len(events), size):
        runner.process("src", Batch(events=events[k : k + size], offset=k + size))
    runner.close()
    rows: list[dict[str, object]] = read_examples(folder / "examples").to_pylist()
    return rows


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    return messed_up(repeated(synthetic(seed=12, users=50, days=5), seed=4), seed=6)


@pytest.fixture(scope="module")
def logged_rows(stream: list[Event], tmp_path_factory: pytest.TempPathFactory) -> list[dict]:  # type: ignore[type-arg]
    return logged(stream, tmp_path_factory.mktemp("logged"))


def test_the_log_holds_the_same_examples_whatever_the_batches(
    stream: list[Event],
    logged_rows: list[dict],
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    rows = logged_rows
    assert logged(stream, tmp_path, size=100_000) == rows
    tasks = {r["task"] for r in rows}
    assert tasks == {"like", "convert", "repurchase", "carted"}
    assert all(r["label_ts"] >= r["exposure_ts"] for r in rows)  # type: ignore[operator]
    assert sorted({r["label"] for r in rows}) == [0.0, 1.0]  # type: ignore[type-var]


def _exposure(events: list[Event], row: dict, cfg: PipelineConfig) -> int:  # type: ignore[type-arg]
    """The position of the event that opened ``row``'s example (the first one that could)."""
    task = next(t for t in cfg.tasks if t.name == row["task"])
    for i, e in enumerate(events):
        if e.user != row["user"] or e.ts != row["exposure_ts"] or e.type not in task.on:
            continue
        key = e.item_id if task.label.key == "item" else e.category
        if row["key"] is None or key == row["key"]:
            return i
    raise AssertionError(f"no exposure for {row}")


def test_features_rebuilt_from_the_profile_as_of_the_exposure_are_the_logged_ones(
    stream: list[Event],
    logged_rows: list[dict],
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    rows = logged_rows
    cfg = config()
    cfg = msgspec.structs.replace(
        cfg, run=msgspec.structs.replace(cfg.run, training_log=str(tmp_path / "unused"))
    )
    rnd = random.Random(3)
    picked = rnd.sample(rows, 12)
    picked += [r for r in rows if r["key"] is not None][-3:]  # late in the stream
    for row in picked:
        i = _exposure(stream, row, cfg)
        core = Core(cfg)
        state = core.new_state()
        core.step(state, stream[:i])  # the stream up to the exposure, nothing after it
        out = core.step(state, [stream[i]])
        if row["key"] is None:  # immediate: learned at once, in this step's log
            assert out.learned is not None
            found = [r for r in _rows(out.learned) if r["task"] == row["task"]]
        else:
            log = out.pending[str(row["task"])]
            created = log.log().created if hasattr(log, "log") else log.created
            found = [
                {"feature_idx": _ints(p.idx), "feature_val": _floats(p.val)}
                for p in created
                if p.key == row["key"]
            ]
        assert len(found) == 1, row
        assert found[0]["feature_idx"] == row["feature_idx"]
        assert found[0]["feature_val"] == row["feature_val"]


def _rows(log: object) -> list[dict]:  # type: ignore[type-arg]
    columns = log.columns  # type: ignore[attr-defined]
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


def _ints(packed: bytes) -> list[int]:
    import numpy as np

    return np.frombuffer(packed, np.int64).tolist()  # type: ignore[no-any-return]


def _floats(packed: bytes) -> list[float]:
    import numpy as np

    return np.frombuffer(packed, np.float64).tolist()  # type: ignore[no-any-return]

"""The training examples as the online models learned them, for training a batch model offline.

With ``run.training_log`` set to a directory, every committed batch writes one Parquet file,
``part-<seq>.parquet`` (``seq``: the batch's checkpoint sequence number), holding a row per
example its models learned, in the order they learned them:

- ``task``, ``user``, ``key`` (the delayed task's item, category or user; null for immediate
  examples);
- ``exposure_ts``: the event time of the exposure (or of the event, for an immediate label),
  whose features are the profile and item statistics just *before* that event: point-in-time
  correct, nothing of what came later;
- ``label_ts``: when the label became known and was learned (a delayed example's deadline, the
  event time for an immediate one);
- ``label``: 1.0 / 0.0, or the target of a regression task; ``prediction``: what the model said
  at exposure time;
- ``feature_idx`` and ``feature_val``: the hashed features the learner saw (list columns).

The file is written before the batch's commit, named by the sequence number the commit takes, so
a batch replayed after a crash overwrites its own file: the directory holds each example once.

>>> import tempfile
>>> log = ExampleLog()
>>> log.add("like", "u1", None, 10.0, 10.0, 1.0, 0.5, [3, 7], [1.0, 0.5])
>>> with tempfile.TemporaryDirectory() as folder:
...     path = write_part(folder, 1, log)
...     read_examples(folder)["feature_idx"].to_pylist()
[[3, 7]]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCHEMA_FIELDS = (
    "task",
    "user",
    "key",
    "exposure_ts",
    "label_ts",
    "label",
    "prediction",
    "feature_idx",
    "feature_val",
)


class ExampleLog:
    """The examples one batch learned, as columns, in learning order."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in SCHEMA_FIELDS}

    def __len__(self) -> int:
        return len(self.columns["task"])

    def add(
        self,
        task: str,
        user: str,
        key: str | None,
        exposure_ts: float,
        label_ts: float,
        label: float,
        prediction: float,
        idx: Sequence[int],
        val: Sequence[float],
    ) -> None:
        c = self.columns
        for name, value in zip(
            SCHEMA_FIELDS,
            (task, user, key, exposure_ts, label_ts, label, prediction, list(idx), list(val)),
            strict=True,
        ):
            c[name].append(value)


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("task", pa.string()),
            ("user", pa.string()),
            ("key", pa.string()),
            ("exposure_ts", pa.float64()),
            ("label_ts", pa.float64()),
            ("label", pa.float64()),
            ("prediction", pa.float64()),
            ("feature_idx", pa.list_(pa.int64())),
            ("feature_val", pa.list_(pa.float64())),
        ]
    )


def write_part(folder: str | os.PathLike[str], seq: int, log: ExampleLog) -> Path:
    """Write ``log`` as ``folder/part-<seq>.parquet`` (atomically: a temporary file renamed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"part-{seq:012d}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.table(log.columns, schema=_schema()), tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def read_examples(folder: str | os.PathLike[str]) -> Any:
    """Every part in ``folder`` as one ``pyarrow.Table``, in batch order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(Path(folder).glob("part-*.parquet"))
    if not parts:
        return _schema().empty_table()
    return pa.concat_tables([pq.read_table(p, schema=_schema()) for p in parts])

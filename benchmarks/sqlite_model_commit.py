"""What committing a task's model costs a SQLite batch, three ways side by side: the whole
checkpoint every batch (``whole``); the whole checkpoint serialised every batch and compared by
the store with the last one, which writes only the coordinates that changed (``compared``,
:mod:`liveprofile.learn.ckptdelta`, the engine's way before model updates); the coordinates
the learner says the batch touched, handed as a model update (``updates``,
:mod:`liveprofile.learn.tracked`, the engine's way now).

The model is the Complete Journey quick start's (``repurchase``, FTRL, 2^20 coordinates) as a
store holds it after ``--events`` events (replayed first, batches of 5,000, unless ``--store``
names such a store). Then ``--batches`` times: the model learns ``--examples`` examples, and
the three stores commit it in one transaction each, in turn; the time (serialising the whole
model, or making the update, included) and the bytes of model written are recorded, and each
store reads the model back and checks it equals the whole checkpoint. An example has 20
features drawn from 400,000 names, so a batch touches tens of thousands of coordinates, some of
them new: more than a Complete Journey batch of 5,000 events does.

Prints the model's size, then per store the median and mean commit time in ms and the MB of
model written per commit; the stores are left in a temporary folder.

Run: ``python benchmarks/sqlite_model_commit.py`` (a few minutes: the replay), or
``--store PATH`` with a Complete Journey store replayed with batches of 5,000.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Hashable
from pathlib import Path

import numpy as np

import liveprofile
from liveprofile.datasets.completejourney import QUICKSTART_TOML, CompleteJourneySource
from liveprofile.learn.linear import FTRLProximal
from liveprofile.learn.registry import dump_learner, load_learner
from liveprofile.learn.tracked import ModelTracker, stage_change
from liveprofile.store import sqlite as sqlite_store
from liveprofile.store.sqlite import SQLiteStore

NAME = "model/repurchase"
#: feature names an example draws from
VOCABULARY = 400_000


def trained_model(store: str | None, events: int, folder: Path) -> bytes:
    if store is None:
        store = str(folder / "cj.db")
        config = liveprofile.PipelineConfig.from_toml(
            QUICKSTART_TOML.replace("batch_size = 100000", "batch_size = 5000")
        )
        liveprofile.replay(CompleteJourneySource(limit=events), store=store, config=config)
    blob = SQLiteStore(store, read_only=True).get_meta(NAME)
    assert blob is not None, f"no {NAME} in {store}"
    return blob


def learn_a_batch(model: FTRLProximal, rng: np.random.Generator, examples: int) -> None:
    for _ in range(examples):
        x: dict[Hashable, float] = {f"f{rng.integers(VOCABULARY)}": 1.0 for _ in range(20)}
        model.learn_one(x, bool(rng.integers(2)))


def written(store: SQLiteStore, whole: int) -> int:
    """Bytes of model the last commit wrote: its delta, or the whole checkpoint."""
    seq, size = store.db.execute(
        "SELECT seq, length(value) FROM meta_delta WHERE name = ? ORDER BY seq DESC LIMIT 1",
        (NAME,),
    ).fetchone() or (0, 0)
    return int(size) if seq > 0 else whole


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store",
        help="a SQLite store of the Complete Journey quick start, replayed with batches of "
        "5,000, to take the model from instead of replaying --events first",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=1_100_000,
        help="Complete Journey transactions replayed to train the model; unused with --store "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=30,
        help="batches learned and committed to both stores (default: %(default)s)",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=2000,
        help="examples learned per batch (default: %(default)s)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    blob = trained_model(args.store, args.events, folder)
    model = load_learner(blob)
    assert isinstance(model, FTRLProximal)
    paths = {
        "whole": folder / "whole.db",
        "compared": folder / "compared.db",
        "updates (now)": folder / "updates.db",
    }
    stores = {label: SQLiteStore(path) for label, path in paths.items()}
    trackers: dict[str, ModelTracker] = {}
    for label, store in stores.items():
        if label.startswith("updates"):
            stage_change(store, trackers, NAME, model)
            store.commit({}, {})
        else:
            store.commit({}, {NAME: blob})
    times: dict[str, list[float]] = {label: [] for label in stores}
    sizes: dict[str, list[int]] = {label: [] for label in stores}
    rng = np.random.default_rng(0)
    minimum = sqlite_store.DELTA_MIN_BYTES
    for _ in range(args.batches):
        learn_a_batch(model, rng, args.examples)
        started = time.perf_counter()
        new = dump_learner(model)  # what the engine serialised each batch before updates
        dumped = time.perf_counter() - started
        for label, store in stores.items():
            sqlite_store.DELTA_MIN_BYTES = 1 << 40 if label == "whole" else minimum
            started = time.perf_counter()
            if label.startswith("updates"):
                stage_change(store, trackers, NAME, model)
                store.commit({}, {})
            else:
                store.commit({}, {NAME: new})
            took = time.perf_counter() - started
            times[label].append(took if label.startswith("updates") else took + dumped)
            sizes[label].append(written(store, len(new)))
            assert store.get_meta(NAME) == new
    sqlite_store.DELTA_MIN_BYTES = minimum
    print(
        f"model {len(blob) / 1e6:.2f} MB; {args.batches} batches of {args.examples} examples; "
        f"each commit is one transaction with the model alone; times include serialising the "
        f"whole model (whole, compared) or making the update (updates)"
    )
    for label in stores:
        ms = [1e3 * t for t in times[label]]
        print(
            f"{label:14s} commit median {statistics.median(ms):7.1f} ms, mean "
            f"{statistics.mean(ms):7.1f} ms; model bytes written per commit "
            f"{statistics.mean(sizes[label]) / 1e6:6.3f} MB"
        )


if __name__ == "__main__":
    main()

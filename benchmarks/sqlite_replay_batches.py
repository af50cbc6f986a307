"""Replay ``LIMIT`` more Complete Journey events into an existing store and report events/s and
the time spent in the SQLite store's commit per batch.

Run: ``python benchmarks/sqlite_replay_batches.py CONFIG.toml STORE LIMIT LABEL``; for a
before/after comparison, run it on copies of one store, once with ``PYTHONPATH=OLD/src`` (OLD:
``git archive`` of the parent commit), alternately.
"""

from __future__ import annotations

import sys
import time

import liveprofile
from liveprofile.config import PipelineConfig
from liveprofile.datasets.completejourney import CompleteJourneySource
from liveprofile.store import sqlite as S
from liveprofile.store.base import Rows


def main() -> None:
    with open(sys.argv[1]) as fh:
        cfg = PipelineConfig.from_toml(fh.read())
    store, limit, label = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    spent: list[float] = []
    orig = S.SQLiteStore.commit

    def timed(self: S.SQLiteStore, rows: Rows, meta: dict[str, bytes]) -> None:
        started = time.perf_counter()
        orig(self, rows, meta)
        spent.append(time.perf_counter() - started)

    S.SQLiteStore.commit = timed  # type: ignore[method-assign,assignment]
    out = liveprofile.replay(
        CompleteJourneySource(), store=store, config=cfg, progress=False, limit=limit
    )
    model = S.SQLiteStore(store, read_only=True).get_meta("model/repurchase") or b""
    spent.sort()
    print(
        f"{label}: {out['events']} events at {out['events_per_s']:.0f} ev/s; commits "
        f"{len(spent)}, median {1e3 * spent[len(spent) // 2]:.1f} ms, mean "
        f"{1e3 * sum(spent) / len(spent):.1f} ms; model {len(model) / 1e6:.2f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()

"""Replay ``LIMIT`` more Complete Journey events into an existing store and report events/s and
the time spent in the SQLite store's commit per batch. Prints one line: events and events/s,
the CPU seconds of the process per event, the number of commits with their median and mean
time in ms, the median time in ms of making a batch's commit (``PipelineState.commit_payload``:
rows, blobs and, before model updates, the whole model serialised) plus the commit, and the
size of the store's ``repurchase`` model in MB.

Run: ``python benchmarks/sqlite_replay_batches.py CONFIG.toml STORE LIMIT LABEL``; for a
before/after comparison, run it on copies of one store, once with ``PYTHONPATH=OLD/src`` (OLD:
``git archive`` of the parent commit), alternately.
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

import liveprofile
from liveprofile.config import PipelineConfig
from liveprofile.datasets.completejourney import CompleteJourneySource
from liveprofile.engine.state import PipelineState
from liveprofile.store import sqlite as S
from liveprofile.store.base import Rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "config", metavar="CONFIG.toml", help="the pipeline config (TOML) to replay with"
    )
    parser.add_argument(
        "store",
        metavar="STORE",
        help="an existing SQLite store of the Complete Journey, replayed into in place",
    )
    parser.add_argument(
        "limit",
        metavar="LIMIT",
        type=int,
        help="Complete Journey events to replay, from the store's committed offset on",
    )
    parser.add_argument("label", metavar="LABEL", help="a name printed at the start of the line")
    args = parser.parse_args()
    with open(args.config) as fh:
        cfg = PipelineConfig.from_toml(fh.read())
    store, limit, label = args.store, args.limit, args.label
    spent: list[float] = []
    orig = S.SQLiteStore.commit

    def timed(self: S.SQLiteStore, rows: Rows, meta: dict[str, bytes]) -> None:
        started = time.perf_counter()
        orig(self, rows, meta)
        spent.append(time.perf_counter() - started)

    S.SQLiteStore.commit = timed  # type: ignore[method-assign,assignment]
    payload: list[float] = []
    make = PipelineState.commit_payload

    def made(self: PipelineState, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        out = make(self, *args, **kwargs)
        payload.append(time.perf_counter() - started)
        return out

    PipelineState.commit_payload = made  # type: ignore[method-assign]
    before = resource.getrusage(resource.RUSAGE_SELF)
    out = liveprofile.replay(
        CompleteJourneySource(), store=store, config=cfg, progress=False, limit=limit
    )
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    model = S.SQLiteStore(store, read_only=True).get_meta("model/repurchase") or b""
    both = sorted(p + c for p, c in zip(payload, spent, strict=False))
    spent.sort()
    print(
        f"{label}: {out['events']} events at {out['events_per_s']:.0f} ev/s, "
        f"{1e6 * cpu / max(out['events'], 1):.1f} µs CPU/event; commits "
        f"{len(spent)}, median {1e3 * spent[len(spent) // 2]:.1f} ms, mean "
        f"{1e3 * sum(spent) / len(spent):.1f} ms; payload + commit median "
        f"{1e3 * both[len(both) // 2]:.1f} ms; model {len(model) / 1e6:.2f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()

"""What removing every link of an expired user costs: the login stream with a profile TTL.

From the repository root::

    .venv/bin/python benchmarks/expiry_links.py --users 5000 --days 28 --ttl 3d --repeat 2
    .venv/bin/python benchmarks/expiry_links.py --links 10000,100000,1000000 \
        --stores sqlite,redis --baseline OTHER/src --rounds 2

With ``--links``, the per-batch cost at a given number of links (:mod:`link_batches`): a
store holding that many links, then batches of plain events with one ``$forget`` each, timed
batch by batch (wall, CPU, and the time spent finding the links to the erased user), with this
checkout and, with ``--baseline``, the code of another ``src/`` folder, each run in its own
process, interleaved.

A batch in which a user may expire (idle past ``run.profile_ttl`` by the batch's last event)
finds the links that lead to the users it expires (``engine/erasure.py``), as a batch with a
``$forget`` does: by the links' index by target (``engine/linkindex.py``), or, before the
index (state schema 1), by reading every identity link of the store. Without ``--links``, this
replays the synthetic shop with logins (``benchmarks/identity.py``) into a fresh SQLite store
with the TTL, and counts the scans of the links and their time (none with the index). Run it on
two checkouts side by side to compare (e.g. with ``PYTHONPATH=OTHER/src``): it prints one line
of JSON per run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from liveprofile.config import PipelineConfig, RunConfig
from liveprofile.datasets.logins import with_logins
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.local import LocalRunner
from liveprofile.events.sources import JsonlSource
from liveprofile.store.layout import ALIASES
from liveprofile.store.sqlite import SQLiteStore


class CountedStore(SQLiteStore):
    """A SQLite store that counts and times the scans of the link namespace."""

    scans = 0
    scan_seconds = 0.0

    def scan(self, namespace: str) -> Any:
        if namespace != ALIASES:
            return super().scan(namespace)
        started = time.perf_counter()
        rows = list(super().scan(namespace))
        CountedStore.scans += 1
        CountedStore.scan_seconds += time.perf_counter() - started
        return iter(rows)


def replay(config: PipelineConfig, events: Path, folder: Path) -> dict[str, Any]:
    CountedStore.scans, CountedStore.scan_seconds = 0, 0.0
    store = CountedStore(folder / "profiles.db")
    store.setup()
    runner = LocalRunner(config, store, folder / "dead.jsonl")
    started, cpu = time.perf_counter(), time.process_time()
    stats = runner.run(JsonlSource(events))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    links = sum(1 for _ in SQLiteStore.scan(store, ALIASES))
    runner.close()
    return {
        "events": stats.events,
        "batches": stats.batches,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "link_scans": CountedStore.scans,
        "scan_seconds": round(CountedStore.scan_seconds, 3),
        "links_left": links,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--links",
        help="comma-separated numbers of links: measure batches with a $forget on a store "
        "holding that many (see above) instead of replaying the login stream",
    )
    parser.add_argument(
        "--stores",
        default="sqlite,redis",
        help="with --links: sqlite, redis or both (default: %(default)s)",
    )
    parser.add_argument(
        "--baseline", help="with --links: a src/ folder of other code to run side by side"
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --links: interleaved rounds")
    parser.add_argument(
        "--forgets", type=int, default=3, help="with --links: timed batches per run (default: 3)"
    )
    parser.add_argument(
        "--unindexed",
        action="store_true",
        help="with --links: write the links as a store before the index did (schema 1), so the "
        "first batch builds the index",
    )
    parser.add_argument("--users", type=int, default=5000, help="Synthetic users (default 5000).")
    parser.add_argument("--days", type=int, default=28, help="Days of events (default 28).")
    parser.add_argument("--ttl", default="3d", help="run.profile_ttl (default 3d).")
    parser.add_argument("--batch", type=int, default=5000, help="Events per batch (default 5000).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs (default 1).")
    args = parser.parse_args()
    if args.links:
        from link_batches import compare

        compare(args)
        return
    config = PipelineConfig(run=RunConfig(batch_size=args.batch, profile_ttl=args.ttl))
    synthetic = SyntheticConfig(users=args.users, days=args.days, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "logins.jsonl"
        encode = msgspec.json.encode
        path.write_bytes(b"\n".join(encode(e) for e in with_logins(generate(synthetic))) + b"\n")
        for k in range(args.repeat):
            run_dir = folder / f"run-{k}"
            run_dir.mkdir()
            print(json.dumps(replay(config, path, run_dir)))


if __name__ == "__main__":
    main()

"""Memory per user and events/s as the number of distinct users grows (synthetic, no I/O limits).

Each size runs in a fresh process: N distinct users, three events each (view, cart, purchase of
one item of one of 50 categories, over 30 days of event time), replayed in batches of 20,000
into a SQLite store in a temporary folder. Reported per size: events/s end to end, the growth
of the process's resident memory divided by N, and what the runner holds per user: the resting
profile bytes (committed bytes kept between batches), the de-duplication window and the compiled
path's codes. ``--resting-profiles`` caps the resting profiles kept (``run.resting_profiles``);
``--velocity`` keeps the velocity counts (the default pipeline's; off here unless given).

    python benchmarks/cardinality.py --users 100000 1000000 --json cardinality_results.json

Prints one JSON line per size; ``--json`` also writes the list to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DAY = 86400.0
T0 = 1_704_067_200.0
BATCH = 20_000


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _batches(users: int, seed: int = 1) -> Any:
    from liveprofile.events.columns import EventColumns

    rng = np.random.default_rng(seed)
    per = BATCH // 3
    for start in range(0, users, per):
        n = min(per, users - start)
        ids = [f"user-{k:09d}" for k in range(start, start + n)]
        ts0 = T0 + np.sort(rng.uniform(0, 30 * DAY, n))
        cats = [f"cat-{c:02d}" for c in rng.integers(0, 50, n)]
        items = [f"sku-{i:05d}" for i in rng.integers(0, 20_000, n)]
        prices = np.round(rng.lognormal(3.0, 0.8, n), 2)
        user, kind, ts, item, cat, value, eid = [], [], [], [], [], [], []
        for j in range(n):
            for step, name in enumerate(("view", "cart", "purchase")):
                eid.append(f"{ids[j]}-{step}")
                user.append(ids[j])
                kind.append(name)
                ts.append(ts0[j] + 60.0 * step)
                item.append(items[j])
                cat.append(cats[j])
                value.append(prices[j] if name != "view" else np.nan)
        yield EventColumns(
            eid, user, kind, np.array(ts), item, cat, [()] * len(eid), np.array(value)
        )


def measure(users: int, resting: int | None, velocity: bool) -> dict[str, Any]:
    """One size, in this process."""
    from liveprofile.config import PipelineConfig
    from liveprofile.engine.local import LocalRunner
    from liveprofile.events.sources import Batch
    from liveprofile.store.sqlite import SQLiteStore

    folder = Path(tempfile.mkdtemp())
    text = f"[risk]\nvelocity = {str(velocity).lower()}\n"
    if resting is not None:
        text = f"[run]\nresting_profiles = {resting}\n" + text
    config = PipelineConfig.from_toml(text)
    runner = LocalRunner(config, SQLiteStore(folder / "p.db"), folder / "dead.jsonl")
    batches = list(_batches(users))
    events = sum(len(b) for b in batches)
    base = _rss()
    started = time.perf_counter()
    for k, cols in enumerate(batches):
        runner.process("bench", Batch(events=cols, offset=k + 1))
    seconds = time.perf_counter() - started
    grown = _rss() - base
    state = runner.state
    resting_bytes = sum(len(b) + len(u) + 100 for u, b in state._resting_profiles.items())
    runner.close()
    return {
        "users": users,
        "velocity": velocity,
        "resting_cap": resting,
        "events": events,
        "events_per_s": round(events / seconds),
        "rss_growth_per_user": round(grown / users),
        "resting_profiles": len(state._resting_profiles),
        "resting_bytes_per_user": round(resting_bytes / users),
        "mean_profile_bytes": round(
            sum(map(len, state._resting_profiles.values())) / max(1, len(state._resting_profiles))
        ),
        "dedup_ids": len(state.dedup),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--users",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000, 5_000_000],
        help="numbers of distinct users, each measured in a fresh process "
        "(default: 100000 1000000 5000000)",
    )
    parser.add_argument(
        "--resting-profiles",
        type=int,
        default=None,
        help="run.resting_profiles: most profiles kept as committed bytes between batches, "
        "0 keeps every one (default: the config's default, 0)",
    )
    parser.add_argument(
        "--velocity",
        action="store_true",
        help="keep the velocity counts, as the default pipeline does (off unless given)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the rows to this JSON file"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.resting_profiles, args.velocity)))
        return
    results = []
    for users in args.users:
        cmd = [sys.executable, __file__, "--one", str(users)]
        if args.resting_profiles is not None:
            cmd += ["--resting-profiles", str(args.resting_profiles)]
        if args.velocity:
            cmd.append("--velocity")
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        results.append(row)
        print(json.dumps(row))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

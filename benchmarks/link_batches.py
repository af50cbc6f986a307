"""Per-batch cost of a batch that erases a user, by the number of identity links in the store.

Run through ``expiry_links.py --links N,...`` (see there), which starts this module once per
(code, store, number of links) in a process of its own, with the code's ``src/`` first on
``PYTHONPATH``. A run writes N links (visitor ``v{i}`` -> user ``u{i // 2}``) straight into a
fresh store, as the code under test lays them out (with their index by target when it has
one), then replays ``--forgets`` batches of 500 events: 499 views of users and one ``$forget``
of a user with two visitors. A batch with a ``$forget`` finds the links to the erased user:
by a scan of every link before the index, by the index after. Prints one JSON line: each
batch's wall and CPU seconds and the seconds spent finding the links (``load_links_to``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
THIS_SRC = HERE.parent / "src"
T0 = 1_700_000_000.0
PER_BATCH = 500
CHUNK = 50_000


def _open(kind: str, folder: Path) -> Any:
    if kind == "sqlite":
        from liveprofile.store.sqlite import SQLiteStore

        return SQLiteStore(folder / "profiles.db")
    from liveprofile.redis.store import RedisStore

    return RedisStore("redis://127.0.0.1:6379/0", prefix=f"bench-links-{uuid.uuid4().hex[:10]}")


def _write_links(store: Any, n: int, unindexed: bool) -> None:
    """N links as the code under test stores them (the index too, unless ``unindexed``)."""
    from liveprofile.store import layout

    indexed = hasattr(layout, "LINKS_BY_TARGET") and not unindexed
    for start in range(0, n, CHUNK):
        links = {f"v{i}": f"u{i // 2}" for i in range(start, min(n, start + CHUNK))}
        rows: dict[str, dict[str, bytes | None]] = {
            layout.ALIASES: {v: u.encode() for v, u in links.items()}
        }
        if indexed:
            key = layout.link_index_key
            rows[layout.LINKS_BY_TARGET] = {key(u, v): b"" for v, u in links.items()}
        store.commit(rows, {})
    ckpt = layout.Checkpoint()
    if unindexed:
        ckpt.schema = 1
    store.commit({}, {layout.CHECKPOINT: layout.encode_checkpoint(ckpt)})


def _events(path: Path, n: int, forgets: int) -> None:
    lines = []
    k = 0
    users = max(1, n // 2)
    for b in range(forgets):
        for j in range(PER_BATCH - 1):
            user = f"u{(b * 7919 + j * 104729) % users}"
            e = {"event_id": f"e{k}", "user_id": user, "type": "view", "item_id": f"i{j % 50}"}
            lines.append(msgspec.json.encode({**e, "ts": T0 + k}))
            k += 1
        who = f"u{(b * 2_654_435_761) % users}"
        forget = {"event_id": f"f{b}", "user_id": who, "type": "$forget", "ts": T0 + k}
        lines.append(msgspec.json.encode(forget))
        k += 1
    path.write_bytes(b"\n".join(lines) + b"\n")


def run_one(kind: str, n: int, forgets: int, unindexed: bool) -> dict[str, Any]:
    """One run of the code on ``sys.path`` (see the module's docstring)."""
    import liveprofile.engine.local as local
    from liveprofile.config import PipelineConfig, RunConfig
    from liveprofile.engine.local import LocalRunner
    from liveprofile.events.sources import JsonlSource
    from liveprofile.store.layout import ALIASES, check_config

    lookup = [0.0]
    found = getattr(local, "load_links_to")  # noqa: B009 (patched below)

    def timed(*a: Any) -> None:
        started = time.perf_counter()
        found(*a)
        lookup[0] += time.perf_counter() - started

    setattr(local, "load_links_to", timed)  # noqa: B010 (the name the runner calls)
    config = PipelineConfig(run=RunConfig(batch_size=PER_BATCH))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = _open(kind, folder)
        store.setup()
        try:
            started = time.perf_counter()
            _write_links(store, n, unindexed)
            written = time.perf_counter() - started
            check_config(store, config)
            _events(folder / "events.jsonl", n, forgets)
            runner = LocalRunner(config, store, folder / "dead.jsonl")
            source = JsonlSource(folder / "events.jsonl", commands=True)
            batches = []
            for batch in source.batches(0, PER_BATCH):
                lookup[0] = 0.0
                wall, cpu = time.perf_counter(), time.process_time()
                runner.process(source.name, batch)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                batches.append((round(wall, 4), round(cpu, 4), round(lookup[0], 4)))
            left = store.count(ALIASES)
            runner.close()
        finally:
            if kind == "redis":
                store.drop()
            store.close()
    return {"store": kind, "links": n, "write_s": round(written, 1), "batches": batches,
            "links_left": left}  # fmt: skip


def compare(args: argparse.Namespace) -> None:
    """Run every (code, store, size), interleaved over ``args.rounds``; print a table of the
    median batch per code."""
    codes = {"this": str(THIS_SRC)}
    if args.baseline:
        codes["baseline"] = args.baseline
    sizes = [int(x) for x in args.links.split(",")]
    stores = args.stores.split(",")
    runs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for n in sizes:
            for kind in stores:
                order = list(codes.items()) if r % 2 == 0 else list(codes.items())[::-1]
                for name, src in order:
                    env = {**os.environ, "PYTHONPATH": src}
                    argv = [sys.executable, __file__, kind, str(n), str(args.forgets)]
                    if args.unindexed:
                        argv.append("--unindexed")
                    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    row["code"] = name
                    print(json.dumps(row), flush=True)
                    runs.setdefault((name, kind, n), []).append(row)
    print(f"\n{'store':>7} {'links':>9} {'code':>9} {'batch s':>8} {'cpu s':>7} {'find s':>8}")
    for n in sizes:
        for kind in stores:
            for name in codes:
                rows = [b for row in runs[(name, kind, n)] for b in row["batches"]]
                if args.unindexed:  # the first batch builds the index: shown on its own
                    rows = [b for row in runs[(name, kind, n)] for b in row["batches"][1:]]
                wall, cpu, find = (statistics.median(b[i] for b in rows) for i in range(3))
                print(f"{kind:>7} {n:>9} {name:>9} {wall:>8.3f} {cpu:>7.3f} {find:>8.4f}")


if __name__ == "__main__":
    kind, n, forgets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps(run_one(kind, n, forgets, "--unindexed" in sys.argv[4:])))

"""CPU per request of the scoring endpoints: recommendations and single scores, in process.

From the repository root::

    python benchmarks/serving_features.py --json /tmp/serving_features.json
    python benchmarks/serving_features.py --against /tmp/before/src --rounds 4

The store is a SQLite file filled once by a real replay of the synthetic shop (``--users``
users, ``--items`` items, 14 days; kept under ``--store`` and reused when it is there). Three
request kinds go through the read API's own code (``_Reader`` behind ``GET /v1/score`` and
``GET /v1/recommendations/{user}``), for random users of the store, after a warm-up (which
compiles the feature functions, or loads them from numba's cache):

- ``recommend``: the default recommendation (``k=10``, the candidates of the user's interests,
  up to 1,000 of them, the learned ranking, five reasons per item);
- ``rank100``: 100 candidates given by the request, ranked by the model alone, no reasons
  (``top=0``: the scoring alone, as a ranker round reads it);
- ``score``: one (user, item) score with its ten top features.

For each: the thread's CPU time per request (which leaves out the time the process spent
preempted, so it stays meaningful on a busy machine) and the wall clock, median and p99.

``--against SRC`` measures another checkout of the package too (``SRC``: its ``src`` folder,
e.g. from ``git archive``), in ``--rounds`` rounds alternating between the two in subprocesses
on the same store and the same requests, and prints both side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TOKEN = "bench-token"
HERE = Path(__file__).resolve()


def build_store(path: Path, users: int, items: int) -> None:
    import liveprofile
    from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl

    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    events = path.with_suffix(".jsonl")
    write_jsonl(events, SyntheticConfig(users=users, items=items, categories=20, days=14, seed=7))
    t0 = time.perf_counter()
    summary = liveprofile.replay(events, store=path, progress=False)
    print(f"replayed {summary['events']:,} events in {time.perf_counter() - t0:.0f} s", flush=True)


KINDS = ("recommend", "rank100", "score")


def measure(store: Path, requests: int, seed: int, only: list[str]) -> dict[str, Any]:
    """CPU and wall clock per request of each kind, in this process."""
    import liveprofile
    from liveprofile.serving.profiles import ReadSettings, _Reader

    reader = _Reader(ReadSettings(str(store), TOKEN))
    reader.open()
    rec = reader.recommender
    users = sorted(key for key, _ in reader.store.scan("profile"))
    items = sorted(key for key, _ in reader.store.scan("item"))
    rng = random.Random(seed)
    picks = [(rng.choice(users), rng.sample(items, 100)) for _ in range(requests)]
    kinds = {
        "recommend": lambda u, c: rec.recommend(u),
        "rank100": lambda u, c: rec.recommend(u, candidates=c, rank="model", top=0),
        "score": lambda u, c: reader.score(u, c[0], "convert", 10),
    }
    out: dict[str, Any] = {"package": str(Path(liveprofile.__file__).parent)}
    try:
        for name, call in kinds.items():
            if name not in only:
                continue
            for user, cands in picks[:20]:  # warm-up: compiled functions, caches
                call(user, cands)
            cpu: list[float] = []
            wall: list[float] = []
            for user, cands in picks:
                t0, c0 = time.perf_counter(), time.thread_time()
                call(user, cands)
                c1, t1 = time.thread_time(), time.perf_counter()
                cpu.append(c1 - c0)
                wall.append(t1 - t0)
            cpu.sort()
            wall.sort()
            out[name] = {
                "cpu_mean_ms": 1000 * statistics.fmean(cpu),
                "cpu_p50_ms": 1000 * cpu[len(cpu) // 2],
                "cpu_p99_ms": 1000 * cpu[min(len(cpu) - 1, int(0.99 * len(cpu)))],
                "wall_p50_ms": 1000 * wall[len(wall) // 2],
            }
    finally:
        reader.close()
    return out


def child(src: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure` in a subprocess importing the package from ``src`` (None: this one)."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(HERE), "--store", args.store, "--requests", str(args.requests)]
    cmd += ["--kinds", ",".join(args.kinds)]
    done = subprocess.run([*cmd, "--child"], env=env, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="/tmp/liveprofile-bench/serving_features.db")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--against", help="another checkout's src folder to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument(
        "--kinds", type=lambda s: s.split(","), default=list(KINDS), help="e.g. score,rank100"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    store = Path(args.store)
    if args.child:
        print(json.dumps(measure(store, args.requests, args.seed, args.kinds)))
        return
    build_store(store, args.users, args.items)
    runs: dict[str, list[dict[str, Any]]] = {"this": [], "against": []}
    for _ in range(args.rounds if args.against else 1):
        runs["this"].append(child(None, args))
        if args.against:
            runs["against"].append(child(args.against, args))
    report: dict[str, Any] = {}
    for who, results in runs.items():
        if not results:
            continue
        report[who] = {"package": results[0]["package"]}
        for kind in args.kinds:
            report[who][kind] = {
                key: statistics.median(r[kind][key] for r in results) for key in results[0][kind]
            }
    print(f"load average {os.getloadavg()[0]:.1f}; median of {len(runs['this'])} round(s)")
    for kind in args.kinds:
        line = f"{kind:>9}:"
        for who in report:
            f = report[who][kind]
            line += (
                f"  {who} cpu mean {f['cpu_mean_ms']:.2f} ms p50 {f['cpu_p50_ms']:.2f}"
                f" p99 {f['cpu_p99_ms']:.2f} (wall p50 {f['wall_p50_ms']:.2f})"
            )
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

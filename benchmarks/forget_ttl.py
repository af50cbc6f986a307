"""What operator commands and a profile TTL cost a replay: the login stream plain, and with them.

From the repository root::

    .venv/bin/python benchmarks/forget_ttl.py --users 2000 --days 14 --rounds 3 \
        --baseline OTHER/src

The synthetic shop with logins (``benchmarks/identity.py``'s stream) is replayed into a fresh
SQLite store in batches of ``--batch`` events, with commands accepted from the source (as
``replay --allow-commands``): plain (no TTL, no command); with a ``$forget`` of a user seen so
far every ``--every`` events and ``run.profile_ttl`` ``--ttl``; and with a ``$merge`` of one
user seen so far into another every ``--merge-every`` events (no TTL).
Each replay runs in its own process, with this checkout's code and, with ``--baseline``, the code
of another ``src/`` folder, alternating over ``--rounds``; each prints the seconds, the times the
kernel stopped for the Python lifecycle (``links.Stops._stop``), the profiles held as bytes that
were decoded into objects, and the commands applied and dead-lettered. The last lines give each
code's median and range of the seconds and of the CPU seconds (steadier on a shared machine), and
the CPU the erasures and TTL, and the merges, add to the plain stream's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def write_stream(path: Path, users: int, days: int, every: int, command: str | None) -> int:
    """The login stream with ``command`` (``$forget``, ``$merge`` or None) every ``every``
    events; returns the number of lines."""
    from liveprofile.datasets.logins import with_logins
    from liveprofile.datasets.synthetic import SyntheticConfig, generate
    from liveprofile.events.schema import FORGET, MERGE

    rnd = random.Random(11)
    out: list[Any] = []
    seen: list[str] = []
    known: dict[str, None] = {}  # user ids (not visitors' ids), in order
    for j, e in enumerate(with_logins(generate(SyntheticConfig(users=users, days=days, seed=7)))):
        out.append(e)
        seen.append(e.get("user_id") or e["anonymous_id"])
        if e.get("user_id") is not None:
            known[e["user_id"]] = None
        if command == FORGET and j % every == every - 1:
            who = rnd.choice(seen)
            out.append({"event_id": f"{FORGET}:{j}", "user_id": who, "type": FORGET, "ts": e["ts"]})
        elif command == MERGE and j % every == every - 1:
            into, gone = rnd.sample(list(known), 2)
            out.append({"event_id": f"{MERGE}:{j}", "user_id": into, "anonymous_id": gone,
                        "type": MERGE, "ts": e["ts"]})  # fmt: skip
    encode = msgspec.json.encode
    path.write_bytes(b"\n".join(encode(e) for e in out) + b"\n")
    return len(out)


def replay(events: Path, folder: Path, batch: int, ttl: str) -> dict[str, Any]:
    """One replay in this process (the code on ``sys.path``)."""
    from liveprofile.config import PipelineConfig, RunConfig
    from liveprofile.engine import links
    from liveprofile.engine.lazyprofiles import ProfileMap
    from liveprofile.engine.local import LocalRunner
    from liveprofile.events.schema import COMMANDS
    from liveprofile.events.sources import JsonlSource
    from liveprofile.store.sqlite import SQLiteStore

    counts = {"stops": 0, "decodes": 0}
    stop, decode = links.Stops._stop, ProfileMap._decode

    def counted_stop(self: Any, *args: Any) -> Any:
        counts["stops"] += 1
        return stop(self, *args)

    def counted_decode(self: Any, user: str, p: Any) -> Any:
        if self.held(user) or self.holds_velocity(user):
            counts["decodes"] += 1
        return decode(self, user, p)

    links.Stops._stop = counted_stop  # type: ignore[method-assign]
    ProfileMap._decode = counted_decode  # type: ignore[method-assign]
    config = PipelineConfig(run=RunConfig(batch_size=batch, profile_ttl=ttl))
    store = SQLiteStore(folder / "profiles.db")
    store.setup()
    runner = LocalRunner(config, store, folder / "dead.jsonl")
    started, cpu = time.perf_counter(), time.process_time()
    stats = runner.run(JsonlSource(events, commands=True))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    runner.close()
    dead = (folder / "dead.jsonl").read_text() if (folder / "dead.jsonl").exists() else ""
    lines = events.read_text().splitlines()
    commands = sum(any(f'"type":"{c}"' in line for c in COMMANDS) for line in lines)
    raw = [json.loads(line)["raw"] for line in dead.splitlines()]
    refused = sum(any(f'"type":"{c}"' in line for c in COMMANDS) for line in raw)
    return {"events": stats.events, "seconds": round(seconds, 3), "cpu": round(cpu, 3), **counts,
            "commands": commands - refused, "refused": refused}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--every", type=int, default=1000, help="events per $forget")
    parser.add_argument("--merge-every", type=int, default=1000, help="events per $merge")
    parser.add_argument("--ttl", default="3d")
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", help="a src/ folder of other code to alternate with")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        events, folder, batch, ttl = args.child
        print(json.dumps(replay(Path(events), Path(folder), int(batch), ttl)))
        return
    trees = {"this": str(SRC)}
    if args.baseline:
        trees["baseline"] = str(Path(args.baseline).resolve())
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        streams = {
            "plain": (folder / "plain.jsonl", ""),
            "forget+ttl": (folder / "forget.jsonl", args.ttl),
            "merge": (folder / "merge.jsonl", ""),
        }
        commands = {"plain": (None, 1), "forget+ttl": ("$forget", args.every)}
        commands["merge"] = ("$merge", args.merge_every)
        for mode, (path, _) in streams.items():
            command, every = commands[mode]
            n = write_stream(path, args.users, args.days, every, command)
            print(f"# {mode}: {n} events", flush=True)
        for k in range(args.rounds):
            for name, src in trees.items():
                for mode, (path, ttl) in streams.items():
                    run_dir = folder / f"{name}-{mode}-{k}"
                    run_dir.mkdir()
                    env = {**os.environ, "PYTHONPATH": src}
                    cmd = [sys.executable, __file__, "--child", str(path), str(run_dir),
                           str(args.batch), ttl]  # fmt: skip
                    line = (
                        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                        .stdout.strip()
                        .splitlines()[-1]
                    )
                    row = json.loads(line)
                    results.setdefault((name, mode), []).append(row)
                    print(json.dumps({"round": k, "code": name, "stream": mode, **row}), flush=True)
    for name in trees:
        medians = {}
        for mode in streams:
            rows = results[(name, mode)]
            secs, cpu = [r["seconds"] for r in rows], [r["cpu"] for r in rows]
            medians[mode] = statistics.median(cpu)
            print(
                f"{name:8} {mode:11} median {statistics.median(secs):.2f} s (range "
                f"{min(secs):.2f}-{max(secs):.2f}), CPU {medians[mode]:.2f} s ({min(cpu):.2f}-"
                f"{max(cpu):.2f}), stops {rows[-1]['stops']}, decodes {rows[-1]['decodes']}, "
                f"commands {rows[-1]['commands']} (refused {rows[-1]['refused']})"
            )
        extra = medians["forget+ttl"] / medians["plain"] - 1
        merges = medians["merge"] / medians["plain"] - 1
        added = f"erasures and TTL {100 * extra:+.0f}%, merges {100 * merges:+.0f}%"
        print(f"{name:8} CPU added: {added}")


if __name__ == "__main__":
    main()

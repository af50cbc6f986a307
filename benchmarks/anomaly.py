"""What the anomaly detector costs per event, and whether two versions of the code agree on it.

From the repository root::

    .venv/bin/python benchmarks/anomaly.py --users 2000 --baseline /tmp/old/src --rounds 3

The synthetic generator's events (``--users`` users over ``--days`` days) are written as JSON
lines twice, as :mod:`identity` does: under user ids, and as a shop with logins sends them
(visitors who log in at their first purchase). Each stream replays through the local runner
into a fresh SQLite store with ``risk.anomaly`` on (River's HalfSpaceTrees on every event, the
velocity counts on), in a process of its own; with ``--baseline`` each run is made with this
checkout and with the code under ``--baseline`` (put first on ``PYTHONPATH``), ``--rounds``
times, interleaved, keeping per code and stream the run with the least CPU per event (on a
shared machine wall-clock rates swing with the load far more than CPU time does).

Every run also prints a digest of what it stored (every profile row, the detector and the
checkpoint's event count): the same digest from two codes means the same profiles, anomaly
scores and detector, byte for byte.

``--plain`` also replays with this checkout and the detector off, for what the detector adds.

Prints a table (stream, code, events/s, CPU microseconds per event, digest); ``--json`` also
writes the best runs to a file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

STREAMS = ("user ids", "logins")


def write_streams(folder: Path, users: int, days: int) -> dict[str, Path]:
    import msgspec

    from liveprofile.datasets.logins import with_logins
    from liveprofile.datasets.synthetic import SyntheticConfig, generate

    synthetic = SyntheticConfig(users=users, days=days, seed=7)
    paths = {"user ids": folder / "plain.jsonl", "logins": folder / "logins.jsonl"}
    encode = msgspec.json.encode
    paths["user ids"].write_bytes(b"\n".join(encode(e) for e in generate(synthetic)) + b"\n")
    logins = with_logins(generate(synthetic))
    paths["logins"].write_bytes(b"\n".join(encode(e) for e in logins) + b"\n")
    return paths


def replay(events: Path, folder: Path, batch: int, anomaly: bool = True) -> dict[str, Any]:
    """One replay with the detector on (or off), in this process (run by :func:`run_one`)."""
    import identity

    from liveprofile.config import PipelineConfig, RiskConfig, RunConfig
    from liveprofile.store.layout import ANOMALY
    from liveprofile.store.sqlite import SQLiteStore

    config = PipelineConfig(
        tasks=identity.TASKS, risk=RiskConfig(anomaly=anomaly), run=RunConfig(batch_size=batch)
    )
    run = identity.replay(config, events, folder)
    store = SQLiteStore(folder / "profiles.db")
    digest = hashlib.sha256()
    for key, blob in sorted(store.scan("profile")):
        digest.update(key.encode() + b"\0" + blob)
    digest.update(store.get_meta(ANOMALY) or b"")
    digest.update(str(run["events"]).encode())
    store.close()
    return {
        "events": run["events"],
        "seconds": run["seconds"],
        "cpu_us_per_event": round(run["cpu_seconds"] / max(run["events"], 1) * 1e6, 2),
        "events_per_s": run["events_per_s"],
        "digest": digest.hexdigest()[:16],
    }


def run_one(
    events: Path, folder: Path, batch: int, src: str | None, anomaly: bool = True
) -> dict[str, Any]:
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, here, env.get("PYTHONPATH")) if p)
    folder.mkdir()
    code = (
        "import json, sys\nfrom pathlib import Path\nimport anomaly\n"
        f"print(json.dumps(anomaly.replay(Path({str(events)!r}), Path({str(folder)!r}), "
        f"{batch}, {anomaly})))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=2000, help="Synthetic users (default 2000).")
    parser.add_argument("--days", type=int, default=28, help="Days of events (default 28).")
    parser.add_argument("--batch", type=int, default=5000, help="Events per batch (default 5000).")
    parser.add_argument("--baseline", help="a src/ folder of other code to run each stream with")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    parser.add_argument(
        "--plain", action="store_true", help="also run this checkout with the detector off"
    )
    parser.add_argument("--json", type=Path, help="Also write the best runs to this JSON file.")
    args = parser.parse_args()
    codes: dict[str, tuple[str | None, bool]] = {"this": (None, True)}
    if args.baseline:
        codes["baseline"] = (args.baseline, True)
    if args.plain:
        codes["no detector"] = (None, False)
    best: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_streams(folder, args.users, args.days)
        for k in range(args.rounds):
            for stream in STREAMS:
                for name, (src, anomaly) in codes.items():
                    where = folder / f"{stream.replace(' ', '_')}-{name.replace(' ', '_')}-{k}"
                    row = run_one(paths[stream], where, args.batch, src, anomaly)
                    print(stream, name, row, flush=True)
                    old = best.get((stream, name))
                    if old is None or row["cpu_us_per_event"] < old["cpu_us_per_event"]:
                        best[(stream, name)] = row
    print(f"{'stream':>9} {'code':>11} {'events':>8} {'events/s':>9} {'cpu us/event':>13} digest")
    for (stream, name), row in best.items():
        print(
            f"{stream:>9} {name:>11} {row['events']:>8} {row['events_per_s']:>9} "
            f"{row['cpu_us_per_event']:>13} {row['digest']}"
        )
    if args.json:
        rows = [{"stream": s, "code": c, **r} for (s, c), r in best.items()]
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "best": rows}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()

"""Summarise a Kafka worker's per-batch trace (``liveprofile.kafka.trace``).

From the repository root, after ``benchmarks/freshness.py --trace DIR``::

    .venv/bin/python benchmarks/batch_trace.py DIR/fresh-20000.jsonl [--slowest 10]

Prints the distribution (p50, p90, p99, max) of the batches' sizes, poll, apply and CPU times,
the staleness of their oldest and newest events at commit, and the ms each phase took; then
the slowest batches with what they spent their time on, and how many batches collected garbage;
and each event's time from append to commit (p50, p99), which the probes' freshness minus this
leaves to the read side (``serve`` and the reader).
``--skip S`` drops the first S seconds (the warm-up).

For lines with the partitions' event-time watermarks (``wm``), also how far apart in event time
the partitions were applied: at each batch, the distance between the furthest-ahead and the
furthest-behind partition among those that have started and have batches still to come
(p50, p99, max, in hours), and for each partition how far the others' event time already was
ahead of it when its first batch was applied. A trace of the Flink job
(``LIVEPROFILE_BATCH_TRACE=FILE liveprofile flink run ...``) has no staleness fields; what it
has is summarised the same way.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

FIELDS = ("n", "gap_ms", "poll_ms", "apply_ms", "cpu_ms", "oldest_ms", "newest_ms", "gc_ms")


def load(path: Path, skip: float) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if rows and skip:
        first = rows[0]["t"]
        rows = [r for r in rows if r["t"] - first >= skip]
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """p50/p90/p99/max of each field and phase over ``rows``."""
    out: dict[str, dict[str, float]] = {}
    phases = sorted({k for r in rows for k in r["phases"]})
    columns = {f: [float(r[f]) for r in rows] for f in FIELDS if all(f in r for r in rows)}
    columns.update({f"phase:{k}": [float(r["phases"].get(k, 0.0)) for r in rows] for k in phases})
    for name, values in columns.items():
        a = np.array(values)
        out[name] = {
            "p50": round(float(np.percentile(a, 50)), 1),
            "p90": round(float(np.percentile(a, 90)), 1),
            "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1),
            "mean": round(float(a.mean()), 1),
        }
    return out


def ages(rows: list[dict[str, Any]]) -> dict[str, float]:
    """p50/p99/max of every event's time from append to commit, its batch's events spread
    evenly between the oldest and the newest (compare with the probes' freshness: the rest is
    the read side)."""
    a = np.concatenate([np.linspace(r["oldest_ms"], r["newest_ms"], r["n"]) for r in rows])
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": round(float(a.max()), 1),
    }


def spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How far apart in event time the partitions were applied (see the module's doc)."""
    rows = [r for r in rows if "wm" in r]
    last = {r["p"]: k for k, r in enumerate(rows)}
    latest: dict[int, float] = {}
    gaps, head_start = [], {}
    for k, r in enumerate(rows):
        if r["p"] not in latest:
            others = [w for p, w in latest.items() if p != r["p"]]
            head_start[r["p"]] = round((max(others) - r["wm"]) / 3600, 1) if others else 0.0
        latest[r["p"]] = r["wm"]
        active = [w for p, w in latest.items() if last[p] > k or p == r["p"]]
        gaps.append((max(active) - min(active)) / 3600)
    if not gaps:
        return {}
    a = np.array(gaps)
    return {
        "event_time_spread_h": {
            "p50": round(float(np.percentile(a, 50)), 1),
            "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1),
        },
        "others_ahead_at_first_batch_h": dict(sorted(head_start.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("trace", type=Path, help="a trace file written by a worker")
    parser.add_argument(
        "--slowest", type=int, default=8, help="slowest batches to list (default: %(default)s)"
    )
    parser.add_argument(
        "--skip", type=float, default=0.0, help="seconds of the trace to drop at the start"
    )
    args = parser.parse_args()
    rows = load(args.trace, args.skip)
    if not rows:
        raise SystemExit(f"{args.trace}: no batches")
    span = rows[-1]["t"] - rows[0]["t"]
    events = sum(r["n"] for r in rows)
    cpu = sum(r["cpu_ms"] for r in rows) / 1e3
    print(
        json.dumps(
            {
                "batches": len(rows),
                "events": events,
                "seconds": round(span, 1),
                "apply_cpu_us_per_event": round(cpu / max(events, 1) * 1e6, 1),
                "busy": round(sum(r["apply_ms"] for r in rows) / 1e3 / max(span, 1e-9), 2),
                "batches_with_gc": sum(1 for r in rows if r["gc_gen"] >= 0),
                "gc_gen2": sum(1 for r in rows if r["gc_gen"] == 2),
                **({"append_to_commit_ms": ages(rows)} if "oldest_ms" in rows[0] else {}),
                **spread(rows),
            }
        )
    )
    for name, row in summary(rows).items():
        print(f"{name:>16} " + " ".join(f"{k} {v:>8}" for k, v in row.items()))
    print("slowest batches (apply):")
    for r in sorted(rows, key=lambda r: -r["apply_ms"])[: args.slowest]:
        phases = " ".join(f"{k} {v:.0f}" for k, v in sorted(r["phases"].items()))
        print(
            f"  t+{r['t'] - rows[0]['t']:7.1f}s n {r['n']:5} apply {r['apply_ms']:7.1f} "
            f"cpu {r['cpu_ms']:7.1f} gc {r['gc_ms']:6.1f} (gen {r['gc_gen']}) "
            f"oldest {r.get('oldest_ms', float('nan')):7.0f} | {phases}"
        )


if __name__ == "__main__":
    main()

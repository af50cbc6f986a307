"""What ranking a batch's new strings costs as the strings seen grow.

The compiled step breaks ties between users, items and topics by the sorted order of their
strings (``engine/codes.py StringCodes.rank``), so every batch that brings new ids ranks them
among all ids seen so far. This times that alone, per batch, for ``--sizes`` strings seen and
``--new`` new ones a batch, with ids in random order (hashes, UUIDs: each new id lands anywhere
among the others) and in increasing order (counters: each lands last).

From the repository root::

    python benchmarks/string_ranks.py
    # side by side with another checkout of the code (e.g. an older commit, extracted with
    # `git archive COMMIT | tar -x -C /tmp/old`):
    python benchmarks/string_ranks.py --baseline /tmp/old/src

Each (code, ids, size) runs in a process of its own; the CPU time of ``--batches`` batches is
divided by their number. Prints a table of milliseconds per batch.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from subrun import run_json

_RUN = """
import json, random, sys, time
from liveprofile.engine.codes import StringCodes
order, size, new, batches = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(7)
total = size + new * batches
if order == "random":
    ids = [f"{rng.getrandbits(48):012x}" for _ in range(total)]
else:
    ids = [f"u{k:012d}" for k in range(total)]
codes = StringCodes()
codes.add_missing(ids[:size])
codes.rank()
began = time.process_time()
for b in range(batches):
    start = size + b * new
    codes.add_missing(ids[start : start + new])
    codes.rank()
print(json.dumps({"ms_per_batch": 1000 * (time.process_time() - began) / batches}))
"""


def run_one(order: str, size: int, args: argparse.Namespace, src: str | None) -> float:
    argv = [order, str(size), str(args.new), str(args.batches)]
    return float(run_json(_RUN, argv, src)["ms_per_batch"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="comma-separated numbers of strings seen before the timed batches "
        "(default: 10000,100000,1000000)",
    )
    parser.add_argument("--new", type=int, default=100, help="new strings a batch (default: 100)")
    parser.add_argument("--batches", type=int, default=200, help="timed batches (default: 200)")
    parser.add_argument(
        "--baseline", help="a src/ folder of other code to time too (default: this checkout only)"
    )
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    codes = {"this": None} | ({"baseline": args.baseline} if args.baseline else {})
    table = Table(title=f"Ranking {args.new} new strings a batch, ms per batch")
    for column in ("ids", "strings seen", *codes):
        table.add_column(column, justify="right")
    for order in ("random", "increasing"):
        for size in sizes:
            cells = [f"{run_one(order, size, args, src):.3f}" for src in codes.values()]
            table.add_row(order, f"{size:,}", *cells)
    Console().print(table)


if __name__ == "__main__":
    main()

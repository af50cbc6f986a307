"""The popular-items index on a store kept per partition: rebuilt at every worker commit (as
before) vs at most every ``POPULAR_EVERY_S`` seconds (now), side by side in one run.

A Redis store gets ``--partitions`` scopes (as Kafka workers keep them) of ``--items`` item
statistics each, half of every scope's items shared with the next scope, so the merged scan of
:class:`~liveprofile.serving.partitions.PartitionedView` adds items up across partitions as it
does on a real store. Then ``--requests`` recommendation requests arrive ``--gap`` seconds apart
(a simulated clock, so the figures do not depend on how long each request took), each after a
worker commit that moves the merged checkpoint; the time spent in ``Recommender.popular`` per
request is what a request pays for the index. Each setting runs twice, interleaved.

Prints, per run and setting, the index rebuilds, the milliseconds per request and the total
seconds; nothing is written.

Run: ``python benchmarks/popular_rebuild.py`` (needs Redis on 127.0.0.1:6379; its keys are
removed at the end).
"""

from __future__ import annotations

import argparse
import time
import uuid

from liveprofile.config import PipelineConfig
from liveprofile.profile.items import ItemStats, encode_item
from liveprofile.redis.store import RedisStore
from liveprofile.serving.partitions import PartitionedView
from liveprofile.serving.recommend import POPULAR_EVERY_S, Recommender
from liveprofile.store.layout import (
    CHECKPOINT,
    Checkpoint,
    check_config,
    decode_checkpoint,
    encode_checkpoint,
    read_checkpoint,
)
from liveprofile.store.scoped import ScopedStore

DAY = 86400.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fill(store: RedisStore, partitions: int, items: int) -> None:
    check_config(store, PipelineConfig())
    for p in range(partitions):
        scope = ScopedStore(store, f"bench.{p}")
        first = p * items // 2
        for start in range(0, items, 5000):
            rows = {}
            for k in range(first + start, first + min(start + 5000, items)):
                stats = ItemStats(
                    anchor=DAY,
                    last_ts=DAY,
                    n=k % 97 + 1,
                    popularity=float(k % 89 + 1),
                    category=f"c{k % 50}",
                )
                rows[f"i{k:07d}"] = encode_item(stats)
            ckpt = encode_checkpoint(Checkpoint(seq=start // 5000 + 1, watermark=DAY))
            scope.commit({"item": rows}, {CHECKPOINT: ckpt})


def serve(view: PartitionedView, every: float, requests: int, gap: float) -> dict[str, float]:
    clock = Clock()
    rec = Recommender(view, popular_every_s=every, clock=clock)
    worker = ScopedStore(view.base, "bench.0")
    spent, rebuilds, last = 0.0, 0, None
    for n in range(requests):
        ckpt = decode_checkpoint(worker.get_meta(CHECKPOINT))
        ckpt.seq += 1
        stats = ItemStats(anchor=DAY, last_ts=DAY, n=1, popularity=float(n), category="c0")
        worker.commit(
            {"item": {f"new{n}": encode_item(stats)}}, {CHECKPOINT: encode_checkpoint(ckpt)}
        )
        clock.now += gap
        started = time.perf_counter()
        index = rec.popular(read_checkpoint(view).seq)
        spent += time.perf_counter() - started
        rebuilds += index is not last
        last = index
    return {"ms_per_request": 1e3 * spent / requests, "rebuilds": rebuilds, "total_s": spent}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=4,
        help="partition scopes in the store (default: %(default)s)",
    )
    parser.add_argument(
        "--items",
        type=int,
        default=20000,
        help="item statistics rows per partition, half shared with the next (default: %(default)s)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=40,
        help="recommendation requests per setting and run, each after a worker commit "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--gap",
        type=float,
        default=0.5,
        help="seconds between requests on the simulated clock (default: %(default)s)",
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/15",
        help="Redis URL; a fresh key prefix is used and dropped (default: %(default)s)",
    )
    args = parser.parse_args()
    store = RedisStore(args.redis, prefix=f"lp-bench-popular-{uuid.uuid4().hex[:8]}")
    try:
        store.setup()
        fill(store, args.partitions, args.items)
        view = PartitionedView(store)
        merged = view.count("item")
        print(
            f"{args.partitions} partitions, {merged} items merged; {args.requests} requests "
            f"{args.gap} s apart, a worker commit before each"
        )
        for run in (1, 2):
            for label, every in (
                ("every commit (before)", 0.0),
                ("throttled (now)", POPULAR_EVERY_S),
            ):
                out = serve(view, every, args.requests, args.gap)
                print(
                    f"run {run} {label:22s} rebuilds {out['rebuilds']:3d}  "
                    f"{out['ms_per_request']:8.1f} ms per request  {out['total_s']:6.2f} s in all"
                )
    finally:
        store.drop()
        store.close()


if __name__ == "__main__":
    main()

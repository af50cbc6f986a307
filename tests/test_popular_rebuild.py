"""The popular-items index of a store kept per partition (real Redis) is rebuilt at most every
``popular_every_s`` seconds, not at every worker's commit; a store of one pipeline's is rebuilt
as soon as its checkpoint moves."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from test_partitions import CONFIG, PARTS, _events, _fill

from liveprofile.profile.items import ItemStats, encode_item
from liveprofile.redis.store import RedisStore
from liveprofile.serving.partitions import PartitionedView
from liveprofile.serving.recommend import POPULAR_EVERY_S, Recommender
from liveprofile.store.layout import (
    CHECKPOINT,
    check_config,
    decode_checkpoint,
    encode_checkpoint,
    read_checkpoint,
)
from liveprofile.store.scoped import ScopedStore

REDIS_URL = os.environ.get("LIVEPROFILE_TEST_REDIS", "redis://127.0.0.1:6379/15")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _worker_commit(view: ScopedStore, item: str) -> None:
    """What a worker's batch does to the index's input: a new, very popular item, and its
    checkpoint moves on."""
    ckpt = decode_checkpoint(view.get_meta(CHECKPOINT))
    ckpt.seq += 1
    stats = ItemStats(anchor=ckpt.watermark, last_ts=ckpt.watermark, n=10**6, popularity=1e9)
    view.commit({"item": {item: encode_item(stats)}}, {CHECKPOINT: encode_checkpoint(ckpt)})


def test_the_index_of_a_partitioned_store_is_rebuilt_at_most_every_few_seconds(
    tmp_path: Path,
) -> None:
    tag = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:12]
    split = RedisStore(REDIS_URL, prefix=f"lp-popular-{tag}")
    try:
        split.setup()
        check_config(split, CONFIG)
        events = _events()
        users = sorted({e.user for e in events})
        for p in range(PARTS):
            mine = {u for k, u in enumerate(users) if k % PARTS == p}
            _fill(split, f"shop.{p}", [e for e in events if e.user in mine])
        view = PartitionedView(split)
        clock = Clock()
        rec = Recommender(view, clock=clock)
        assert rec.popular_every_s == POPULAR_EVERY_S > 0
        first = rec.popular(read_checkpoint(view).seq)
        worker = ScopedStore(split, view.scopes()[0])
        for n in range(3):  # commits a second apart: no rebuild
            _worker_commit(worker, f"hit{n}")
            clock.now += 1.0
            assert rec.popular(read_checkpoint(view).seq) is first
        assert "hit0" not in first.overall
        clock.now += POPULAR_EVERY_S
        rebuilt = rec.popular(read_checkpoint(view).seq)
        assert rebuilt is not first and set(rebuilt.overall[:3]) == {"hit0", "hit1", "hit2"}
        clock.now += 1.0  # the checkpoint did not move: nothing to rebuild
        assert rec.popular(read_checkpoint(view).seq) is rebuilt

        # one pipeline's store: rebuilt as soon as the checkpoint moves
        whole = ScopedStore(split, "unused")
        single = Recommender(whole, clock=clock)
        assert single.popular_every_s == 0.0
        assert Recommender(view, clock=clock, popular_every_s=0.0).popular_every_s == 0.0
    finally:
        split.drop()
        split.close()

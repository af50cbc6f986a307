"""A regression task (``target = "value"``, a ``linreg`` learner) behind the shared model
(``run.shared_model``), with scoped Redis Streams workers on real Redis.

* One scope restarted after it learned some targets equals an uninterrupted scope that keeps
  its model apart (``shared_model = false``): the same profiles (with their expected spend),
  the same metrics, and the shared model holds the per-scope model's coordinates and target
  statistics.
* Two scopes at once: the shared model's count of learned examples, and the count in its
  target statistics, equal the examples the scopes' metrics counted.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import redis
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.learn.registry import load_learner
from liveprofile.learn.regression import LinearOGD, metrics_from_bytes
from liveprofile.learn.stored import StoredModels, shared_learned
from liveprofile.profile.state import decode_profile
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.redis.streams import publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.layout import metrics_meta, model_meta
from liveprofile.store.scoped import ScopedStore

#: a classification task and a regression one (spend within two days, learned by linreg)
TASKS_TOML = """
[[tasks]]
name = "convert"
on = ["view"]
label = { kind = "delayed", conversion = ["purchase"], key = "item", window = "1d" }
[[tasks]]
name = "spend_2d"
on = ["purchase", "cart"]
learner = { kind = "linreg" }
[tasks.label]
kind = "delayed"
conversion = ["purchase"]
key = "user"
window = "2d"
target = "value"
"""
CONFIG = "[run]\nbatch_size = 100\nshared_model = true\n[features]\nbits = 12\n" + TASKS_TOML
TASKS = ("convert", "spend_2d")


def _lines(tmp_path: Path, seed: int) -> list[bytes]:
    events = tmp_path / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=50, days=4, seed=seed), duplicate_rate=0.02)
    return events.read_bytes().splitlines()


def _run(url: str, prefix: str, config: str, partitions: list[int], scope: str) -> int:
    store = FencedRedisStore(url, prefix=prefix)
    client = redis.Redis.from_url(url)
    options = WorkerOptions(prefix, partitions, block_ms=50, batch_size=100, scope=scope)
    try:
        worker = RedisWorker(PipelineConfig.from_toml(config), store, client, options)
        return worker.run(max_idle_polls=3).events
    finally:
        store.close()
        client.close()


def _publish(url: str, prefix: str, partitions: int, lines: list[bytes]) -> None:
    client = redis.Redis.from_url(url)
    publish(client, prefix, partitions, lines)
    client.close()


def _profiles(url: str, prefix: str) -> dict[str, object]:
    client = redis.Redis.from_url(url)
    rows = client.hgetall(f"{prefix}:profile")
    client.close()
    return {k.decode(): decode_profile(bytes(v)) for k, v in rows.items()}


def test_a_restarted_scope_on_the_shared_model_equals_one_with_its_own(
    server: RedisServer, tmp_path: Path
) -> None:
    lines = _lines(tmp_path, seed=5)
    cut = 3 * len(lines) // 4
    shared, own = "shared-reg", "own-reg"
    _publish(server.url, shared, 1, lines[:cut])
    assert _run(server.url, shared, CONFIG, [0], "p0") > 0
    store = FencedRedisStore(server.url, prefix=shared)
    assert shared_learned(store, "spend_2d") > 0  # the restart has statistics to carry on
    store.close()
    _publish(server.url, shared, 1, lines[cut:])
    assert _run(server.url, shared, CONFIG, [0], "p0") > 0  # a new worker: a restart
    _publish(server.url, own, 1, lines)
    apart = CONFIG.replace("shared_model = true", "shared_model = false")
    assert _run(server.url, own, apart, [0], "p0") > 0

    got, want = _profiles(server.url, shared), _profiles(server.url, own)
    assert got.keys() == want.keys()
    differ = [u for u, p in got.items() if p != want[u]]
    assert not differ, f"{len(differ)} profiles differ, e.g. {differ[0]}"
    a, b = FencedRedisStore(server.url, prefix=shared), FencedRedisStore(server.url, prefix=own)
    for task in TASKS:
        blob = ScopedStore(a, "p0").get_meta(metrics_meta(task))
        assert blob is not None and blob == ScopedStore(b, "p0").get_meta(metrics_meta(task))
        assert shared_learned(a, task) == metrics_from_bytes(blob).n > 0, task
    model = StoredModels(a).get("spend_2d", seq=0)
    scoped = ScopedStore(b, "p0").get_meta(model_meta("spend_2d"))
    assert scoped is not None
    alone = load_learner(scoped)
    assert isinstance(model, LinearOGD) and isinstance(alone, LinearOGD)
    assert np.array_equal(model.wg, alone.wg) and model.wg.any()
    assert np.array_equal(model.stats, alone.stats) and model.stats[0] > 0
    a.close()
    b.close()


def test_two_scopes_merge_the_regression_model_and_its_statistics(
    server: RedisServer, tmp_path: Path
) -> None:
    prefix = "two-reg"
    _publish(server.url, prefix, 2, _lines(tmp_path, seed=6))
    workers = [
        threading.Thread(target=_run, args=(server.url, prefix, CONFIG, [p], f"p{p}"))
        for p in (0, 1)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert not w.is_alive()
    store = FencedRedisStore(server.url, prefix=prefix)
    for task in TASKS:
        counted = 0
        for scope in ("p0", "p1"):
            blob = ScopedStore(store, scope).get_meta(metrics_meta(task))
            counted += 0 if blob is None else metrics_from_bytes(blob).n
        assert shared_learned(store, task) == counted > 0, task
    model = StoredModels(store).get("spend_2d", seq=0)
    assert isinstance(model, LinearOGD)
    assert model.stats[0] == shared_learned(store, "spend_2d")  # every target counted once
    assert model.wg.any()
    store.close()

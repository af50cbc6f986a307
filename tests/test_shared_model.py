"""One model per task across partitions and workers (``run.shared_model``), on a real Redis.

The Kafka runners' apply path (``kafka.worker.apply_records``) is driven here with records
read from a file, partition by partition, so that the interleaving of workers is chosen by the
test; the tests with a real broker are in ``test_kafka.py``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import msgspec
import numpy as np
import pytest
import redis
from cli_server import CliServer
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.engine.local import RunStats
from liveprofile.errors import StateVersionError
from liveprofile.events.schema import EventParser
from liveprofile.kafka.partition import OwnedPartition, apply_records, load_partition
from liveprofile.kafka.producer import record_key
from liveprofile.kafka.shared_model import SharedLearner, header_of
from liveprofile.learn.linear import LogisticOGD
from liveprofile.learn.registry import load_learner
from liveprofile.learn.stored import StoredModels, load_shared, shared_learned
from liveprofile.redis.fence import FencedOut, FencedRedisStore
from liveprofile.store.layout import check_config, model_meta, model_namespace
from liveprofile.store.scoped import ScopedStore

TOPIC = "t"


def config(shared: bool = True) -> PipelineConfig:
    flag = "true" if shared else "false"
    return PipelineConfig.from_toml(f"[run]\nshared_model = {flag}\n[features]\nbits = 14\n")


def open_store(server: RedisServer, prefix: str, cfg: PipelineConfig) -> FencedRedisStore:
    store = FencedRedisStore(server.url, prefix=prefix)
    store.drop()
    check_config(store, cfg)
    return store


def by_partition(lines: list[bytes], partitions: int) -> list[list[bytes]]:
    out: list[list[bytes]] = [[] for _ in range(partitions)]
    for line in lines:
        if line.strip():
            out[zlib.crc32(record_key(line.strip()) or b"") % partitions].append(line.strip())
    return out


def feed(
    store: FencedRedisStore, owned: OwnedPartition, records: list[bytes], start: int, end: int
) -> None:
    rows = [(o, records[o]) for o in range(start, min(end, len(records)))]
    apply_records(store, TOPIC, owned, rows, RunStats(), EventParser())


def test_one_partition_shared_model_equals_its_own_model(
    server: RedisServer, lines: list[bytes]
) -> None:
    """With one partition the shared model is exactly the model a partition keeps for itself,
    whatever the batch sizes (a coordinate nobody else changed gets the batch's value)."""
    (records,) = by_partition(lines, 1)
    models = {}
    for shared, batch in ((True, 37), (False, 200)):
        cfg = config(shared)
        store = open_store(server, f"one-{shared}", cfg)
        owned, _ = load_partition(store, cfg, TOPIC, 0, {})
        for start in range(0, len(records), batch):
            feed(store, owned, records, start, start + batch)
        if shared:
            assert ScopedStore(store, "t.0").get_meta(model_meta("convert")) is None
            models[shared] = StoredModels(store).get("convert", seq=0)
        else:
            blob = ScopedStore(store, "t.0").get_meta(model_meta("convert"))
            assert blob is not None
            models[shared] = load_learner(blob)
        store.close()
    shared_arrays, own_arrays = (models[s].arrays() for s in (True, False))  # type: ignore[attr-defined]
    assert np.count_nonzero(own_arrays["z"]) > 100
    for name in ("z", "n"):
        assert np.array_equal(shared_arrays[name], own_arrays[name])


def test_a_batch_writes_only_the_coordinates_it_changed(
    server: RedisServer, lines: list[bytes]
) -> None:
    (records,) = by_partition(lines, 1)
    cfg = config()
    store = open_store(server, "sparse", cfg)
    owned, _ = load_partition(store, cfg, TOPIC, 0, {})
    feed(store, owned, records, 0, len(records) - 40)
    client = redis.Redis.from_url(server.url)
    key = f"sparse:{model_namespace('convert')}"
    before = client.hgetall(key)
    feed(store, owned, records, len(records) - 40, len(records))
    after = client.hgetall(key)
    changed = {f for f, v in after.items() if before.get(f) != v}
    assert len(before) > 500 and 0 < len(changed) < len(after) / 4
    assert not any(k.startswith(b"model/") and b"@" in k for k in client.hkeys("sparse:meta"))
    client.close()
    store.close()


def test_two_workers_merge_and_a_fenced_batch_adds_nothing(
    server: RedisServer, lines: list[bytes]
) -> None:
    """Two workers (two connections) own a partition each and interleave batches; a stale
    owner's batch is refused and adds nothing, so the shared model counts every learned example
    once: as many as each partition's model learns on its own."""
    parts = by_partition(lines, 2)
    own = config(shared=False)
    store = open_store(server, "apart", own)
    expected = 0  # examples learned when each partition keeps its own model
    for p, records in enumerate(parts):
        owned, _ = load_partition(store, own, TOPIC, p)
        feed(store, owned, records, 0, len(records))
        expected += owned.state.tasks["convert"].metrics.n
    store.close()

    cfg = config()
    a, b = open_store(server, "merged", cfg), FencedRedisStore(server.url, prefix="merged")
    owned_a, _ = load_partition(a, cfg, TOPIC, 0, {})
    owned_b, _ = load_partition(b, cfg, TOPIC, 1, {})
    client = redis.Redis.from_url(server.url)
    step = 25
    for start in range(0, max(map(len, parts)), step):
        feed(a, owned_a, parts[0], start, start + step)
        if start == step:
            # b takes partition 0 over too, but another owner commits it first
            stale, _ = load_partition(b, cfg, TOPIC, 0, {})
            count = shared_learned(a, "convert")
            client.incr(b.fence_key("t.0"))
            with pytest.raises(FencedOut):
                feed(b, stale, parts[0], start + step, start + 2 * step)
            client.decr(b.fence_key("t.0"))
            assert shared_learned(a, "convert") == count
        feed(b, owned_b, parts[1], start, start + step)
    client.close()
    assert shared_learned(a, "convert") == expected > 0
    merged = StoredModels(a).get("convert", seq=0)
    assert merged is not None and np.count_nonzero(merged.arrays()["z"]) > 100  # type: ignore[attr-defined]
    a.close()
    b.close()


def test_a_store_with_per_partition_models_is_refused(
    server: RedisServer, lines: list[bytes]
) -> None:
    (records,) = by_partition(lines, 1)
    old = config(shared=False)
    store = open_store(server, "old", old)
    owned, _ = load_partition(store, old, TOPIC, 0)
    feed(store, owned, records, 0, 100)
    with pytest.raises(StateVersionError, match=r"per partition.*new store"):
        load_partition(store, config(), TOPIC, 0, {})
    store.close()


def test_the_read_api_scores_with_the_shared_model(
    server: RedisServer, lines: list[bytes], tmp_path: Path
) -> None:
    (records,) = by_partition(lines, 1)
    cfg = config()
    store = open_store(server, "served", cfg)
    owned, _ = load_partition(store, cfg, TOPIC, 0, {})
    feed(store, owned, records, 0, len(records))
    store.close()
    user = json.loads(records[0])["user_id"]
    url = f"{server.url}?prefix=served"
    running = CliServer(
        ["serve", "--store", url], {"LIVEPROFILE_READ_TOKEN": "tok"}, tmp_path / "serve.log"
    )
    try:
        auth = {"Authorization": "Bearer tok"}
        params = {"user": user, "item": "i1", "task": "convert"}
        answer = running.client.get("/v1/score", params=params, headers=auth)
        ranked = running.client.post(
            f"/v1/recommendations/{user}",
            json={"candidates": ["i1", "i2"], "task": "convert"},
            headers=auth,
        )
    finally:
        running.stop()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert 0.0 < body["score"] < 1.0 and body["top_features"]
    assert ranked.status_code == 200, ranked.text
    items = ranked.json()["items"]
    assert [i["item"] for i in items] == ["i1", "i2"]
    assert items[0]["score"] == pytest.approx(body["score"])  # i1 scored by the same model


def test_a_shared_model_of_the_previous_layout_is_refused(server: RedisServer) -> None:
    """Stores whose coordinates were written one row per array (schema 1) are refused with a
    clear error, not read as zeros."""
    cfg = config()
    store = open_store(server, "schema1", cfg)
    old = {"kind": "ftrl", "params": {}, "arrays": ["z", "n"], "layout": "shared", "schema": 1}
    store.commit({}, {model_meta("convert"): msgspec.msgpack.encode(old)})
    with pytest.raises(StateVersionError, match=r"schema 1, this version reads 2.*new store"):
        load_partition(store, cfg, TOPIC, 0, {})
    store.drop()
    store.close()


def _commit(store: FencedRedisStore, seq: int) -> None:
    store.fence = ("s", seq)
    try:
        store.commit({}, {})
    finally:
        store.fence = None


def test_two_writers_of_a_model_with_a_step_count_add_their_changes(server: RedisServer) -> None:
    """OGD keeps a step count besides its weights: both travel through the merge. A writer that
    read the other's commit continues it exactly; two that read the same state add up."""
    store = FencedRedisStore(server.url, prefix="ogd")
    store.drop()
    x, bits = {"f": 1.0, "g": 2.0, "h": -1.0}, 8

    def writer() -> SharedLearner:
        return SharedLearner(LogisticOGD(lr=0.5, power=0.5, bits=bits), store, "like")

    reference = LogisticOGD(lr=0.5, power=0.5, bits=bits)
    header = header_of(reference)
    first, second = writer(), writer()
    first.learn_one(x, True)
    _commit(store, 0)
    second.learn_one(x, False)  # reads the first's commit back
    _commit(store, 1)
    reference.learn_one(x, True)
    reference.learn_one(x, False)
    merged = load_shared(store, "like", header).arrays()  # type: ignore[attr-defined]
    assert merged["t"][0] == 2.0 and np.count_nonzero(merged["w"]) == len(x)
    assert np.array_equal(merged["w"], reference.w) and np.array_equal(merged["t"], reference.t)

    store.drop()
    one, two = writer(), writer()
    one.learn_one(x, True)  # both read the empty model
    two.learn_one(x, True)
    _commit(store, 0)  # the fence went with the rest of the prefix
    _commit(store, 1)
    merged = load_shared(store, "like", header).arrays()  # type: ignore[attr-defined]
    assert merged["t"][0] == 2.0
    assert np.array_equal(merged["w"], one.inner.w + (two.inner.w - 0.0))
    assert shared_learned(store, "like") == 2
    store.drop()
    store.close()

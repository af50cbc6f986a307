"""Redis Streams workers sharing a prefix train one model (``run.shared_model``) on real Redis,
and ``liveprofile serve`` scores with it.

Two scoped workers (``--scope p0``, ``--scope p1``), each owning one partition stream, run at
the same time: each batch merges its model changes into the store's one model per task in its
own fenced commit, so the model's count of learned examples equals the examples the scopes'
metrics counted. The read API
(a real ``serve`` subprocess) answers ``/v1/score`` and recommendations from that model.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import redis
from cli_server import CliServer
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.errors import ConfigError
from liveprofile.learn.metrics import Prequential
from liveprofile.learn.stored import shared_learned
from liveprofile.redis.fence import FencedRedisStore
from liveprofile.redis.streams import publish
from liveprofile.redis.worker import RedisWorker, WorkerOptions
from liveprofile.store.layout import decode_model_header, metrics_meta, model_meta
from liveprofile.store.scoped import ScopedStore

CONFIG = "[run]\nbatch_size = 100\n[features]\nbits = 14\n"
TASKS = [t.name for t in PipelineConfig.from_toml(CONFIG).tasks]
TOKEN = "redis-shared-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _publish(url: str, prefix: str, events: Path) -> int:
    client = redis.Redis.from_url(url)
    with open(events, "rb") as fh:
        published = publish(client, prefix, 2, fh).published
    client.close()
    return published


def _run(url: str, prefix: str, partitions: list[int], scope: str | None) -> None:
    config = PipelineConfig.from_toml(CONFIG)
    store = FencedRedisStore(url, prefix=prefix)
    client = redis.Redis.from_url(url)
    options = WorkerOptions(prefix, partitions, block_ms=50, batch_size=100, scope=scope)
    try:
        RedisWorker(config, store, client, options).run(max_idle_polls=4)
    finally:
        store.close()
        client.close()


def test_two_scoped_workers_train_one_model_that_serve_scores_with(
    server: RedisServer, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=60, days=4, seed=3), duplicate_rate=0.02)
    prefix = "streams-shared"
    _publish(server.url, prefix, events)
    workers = [
        threading.Thread(target=_run, args=(server.url, prefix, [p], f"p{p}")) for p in (0, 1)
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
            view = ScopedStore(store, scope)
            assert view.get_meta(model_meta(task)) is None  # no model of the scope's own
            blob = view.get_meta(metrics_meta(task))
            counted += 0 if blob is None else Prequential.from_bytes(blob).n
        # each batch merged exactly once: as many examples learned as the scopes scored
        assert shared_learned(store, task) == counted, task
        header = store.get_meta(model_meta(task))  # the one shared model's header
        assert header is not None and decode_model_header(header) is not None
    assert shared_learned(store, "convert") > 0

    serve = CliServer(
        ["serve", "--store", f"{server.url}?prefix={prefix}"],
        {"LIVEPROFILE_READ_TOKEN": TOKEN},
        tmp_path / "serve.log",
    )
    try:
        stats = serve.client.get("/v1/stats", headers=AUTH).json()
        assert stats["partitions"] == ["p0", "p1"]
        assert stats["tasks"]["convert"]["n"] == shared_learned(store, "convert")
        user = next(json.loads(x)["user_id"] for x in events.read_text().splitlines())
        answer = serve.client.get(f"/v1/recommendations/{user}?k=5", headers=AUTH)
        assert answer.status_code == 200, answer.text
        item = answer.json()["items"][0]["item"]
        answer = serve.client.get(f"/v1/score?user={user}&item={item}&task=convert", headers=AUTH)
        assert answer.status_code == 200, answer.text
        score = answer.json()
        assert score["score"] == pytest.approx(answer_score(serve, user, item))
        assert any(c for _, c in score["top_features"]) and score["score"] != 0.5
    finally:
        serve.stop()
    store.close()


def answer_score(serve: CliServer, user: str, item: str) -> float:
    """The item's score as recommendations give it (the same model, another route)."""
    out = serve.client.get(
        f"/v1/recommendations/{user}?k=50", headers=AUTH, params={"rank": "model"}
    ).json()
    return float(next(r["score"] for r in out["items"] if r["item"] == item))


def test_a_scope_with_its_own_model_is_not_mixed_with_shared_ones(
    server: RedisServer, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=20, days=2, seed=3))
    prefix = "streams-own"
    _publish(server.url, prefix, events)
    config = PipelineConfig.from_toml(CONFIG.replace("[run]\n", "[run]\nshared_model = false\n"))
    store = FencedRedisStore(server.url, prefix=prefix)
    client = redis.Redis.from_url(server.url)
    options = WorkerOptions(prefix, [0], block_ms=50, scope="p0")
    assert RedisWorker(config, store, client, options).run(max_idle_polls=2).events > 0
    assert store.get_meta(f"{model_meta('convert')}@p0") is not None
    with pytest.raises(ConfigError, match="different pipeline config"):
        _run(server.url, prefix, [0], "p0")  # the same scope, now with a shared model
    store.close()
    client.close()

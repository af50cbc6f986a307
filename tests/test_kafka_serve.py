"""``liveprofile serve`` on a Kafka-fed store: a real KRaft broker, a real Redis server, two real
worker processes on a topic of three partitions, then ``serve`` as a real subprocess and the
dashboard in Debian's chromium.

The read side must answer with the figures of every partition merged: the counts in
``/v1/stats`` and ``/metrics`` equal the records the workers processed (and each partition's
checkpoint), the tasks' metrics equal ``status --kafka``'s, the timeline's windows add up to
them, the dashboard draws them, and recommendations come from the partitions' item statistics.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kafka_helpers as kh
import msgspec
import pytest
import redis
from cli_server import CliServer
from kafka_helpers import SHARED_CONFIG
from playwright.sync_api import expect, sync_playwright
from redis_server import RedisServer

from liveprofile.config import PipelineConfig
from liveprofile.engine.state import Checkpoint
from liveprofile.kafka.broker import Broker
from liveprofile.kafka.partition import partition_scope
from liveprofile.kafka.status import merged_metrics
from liveprofile.learn.stored import shared_learned
from liveprofile.redis.store import RedisStore

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "kafka-serve-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TOPIC = "served"
CONFIG = SHARED_CONFIG.replace("[run]\n", '[run]\nmetrics_window = "1d"\n') + (
    '[segments]\nbuyers = "frequency >= 1"\n'
)
TASKS = [t.name for t in PipelineConfig.from_toml(CONFIG).tasks]


@dataclass
class Fed:
    url: str
    lines: list[bytes]
    #: per partition: the committed checkpoint
    checkpoints: dict[int, Checkpoint]
    applied: int
    server: CliServer


def _checkpoints(url: str) -> dict[int, Checkpoint]:
    client = redis.Redis.from_url(url)
    try:
        out = {}
        for p in range(kh.PARTITIONS):
            blob = client.hget(f"{TOPIC}:meta", f"checkpoint@{partition_scope(TOPIC, p)}")
            assert blob is not None, f"partition {p} never committed"
            out[p] = msgspec.msgpack.decode(bytes(blob), type=Checkpoint)
        return out
    finally:
        client.close()


@pytest.fixture(scope="module")
def fed(
    broker: Broker,
    server: RedisServer,
    lines: list[bytes],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fed]:
    folder = tmp_path_factory.mktemp("kafka-serve")
    config = folder / "pipeline.toml"
    config.write_text(CONFIG)
    third = len(lines) // 3
    kh.publish(broker.bootstrap, TOPIC, lines[:third])
    logs = [folder / "w1.log", folder / "w2.log"]
    workers = [kh.worker(broker, server.url, TOPIC, config, log, f"w{k + 1}") for k, log in
               enumerate(logs)]  # fmt: skip
    kh.wait("two members", lambda: kh.members(broker, TOPIC) == 2)
    kh.publish(broker.bootstrap, TOPIC, lines[third:])
    kh.wait("both workers to catch up", kh.caught_up(broker, server.url, TOPIC))
    for proc, log in zip(workers, logs, strict=True):
        kh.stop(proc, log)
    applied = [kh.applied(log) for log in logs]
    assert all(n > 0 for n in applied), applied  # both workers held partitions
    url = f"{server.url}?prefix={TOPIC}"
    serve = CliServer(["serve", "--store", url], {"LIVEPROFILE_READ_TOKEN": TOKEN},
                      folder / "serve.log")  # fmt: skip
    yield Fed(server.url, lines, _checkpoints(server.url), sum(applied), serve)
    serve.stop()


def _get(fed: Fed, path: str) -> Any:
    response = fed.server.client.get(path, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def test_stats_and_metrics_count_every_partition(fed: Fed) -> None:
    stats = _get(fed, "/v1/stats")
    ckpts = fed.checkpoints.values()
    records = sum(1 for x in fed.lines if x.strip()) - kh.no_user(fed.lines)  # as published
    assert stats["events"] == sum(c.events for c in ckpts) == fed.applied
    assert stats["events"] + stats["duplicates"] + stats["dead_letters"] == records
    assert stats["duplicates"] == sum(c.duplicates for c in ckpts) > 0
    assert stats["dead_letters"] == sum(c.dead_letters for c in ckpts) > 0
    assert stats["watermark"] == max(c.watermark for c in ckpts)
    assert stats["seq"] == sum(c.seq for c in ckpts)
    assert stats["partitions"] == [partition_scope(TOPIC, p) for p in range(kh.PARTITIONS)]
    client = redis.Redis.from_url(fed.url)
    buyers = [client.hlen(f"{TOPIC}:segment:buyers@{partition_scope(TOPIC, p)}") for p in
              range(kh.PARTITIONS)]  # fmt: skip
    assert stats["profiles"] == client.hlen(f"{TOPIC}:profile") > 0
    client.close()
    assert stats["segments"]["buyers"] == sum(buyers) > 0

    store = RedisStore(fed.url, prefix=TOPIC)
    want = merged_metrics(store, TOPIC, list(range(kh.PARTITIONS)), TASKS)
    for task in TASKS:
        got = stats["tasks"][task]
        assert {k: v for k, v in got.items() if k != "drift"} == {
            k: v for k, v in want[task].items() if k != "shared_model_learned"
        }
        # every example scored was learned by the shared model exactly once
        assert got["n"] == shared_learned(store, task)
    assert stats["tasks"]["convert"]["n"] > 0
    store.close()

    text = fed.server.client.get("/metrics", headers=AUTH).text
    assert f"liveprofile_events {float(stats['events'])}" in text
    assert f"liveprofile_partitions {float(kh.PARTITIONS)}" in text
    n = float(stats["tasks"]["convert"]["n"])
    assert f'liveprofile_task_examples{{task="convert"}} {n}' in text


def test_timeline_adds_up_to_the_stats(fed: Fed) -> None:
    stats = _get(fed, "/v1/stats")
    timeline = _get(fed, "/v1/metrics/timeline")
    for task in TASKS:
        windows = timeline["tasks"][task]
        assert sum(w["n"] for w in windows) == stats["tasks"][task]["n"]
    assert len(timeline["tasks"]["convert"]) >= 3  # four days of events in one-day windows
    history = timeline["segments"]
    assert history and history[-1][1]["buyers"] == stats["segments"]["buyers"]
    times = [ts for ts, _ in history]
    assert times == sorted(times)


def test_recommendations_and_scores_answer(fed: Fed) -> None:
    user = next(json.loads(x)["user_id"] for x in fed.lines if b'"user_id"' in x)
    out = _get(fed, f"/v1/recommendations/{user}?k=5")
    assert out["task"] == "convert" and len(out["items"]) == 5
    assert out["candidates"] in ("interests", "popular") and out["considered"] >= 5
    ranked = [row["rank_score"] for row in out["items"]]
    assert ranked == sorted(ranked, reverse=True)
    item = out["items"][0]["item"]
    score = _get(fed, f"/v1/score?user={user}&item={item}&task=convert")
    assert score["score"] == pytest.approx(out["items"][0]["score"])
    # scored by the shared model the workers trained, not an empty one
    assert any(c for _, c in score["top_features"]) and score["score"] != 0.5


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_dashboard_draws_the_merged_figures(fed: Fed, tmp_path: Path) -> None:
    stats = _get(fed, "/v1/stats")
    timeline = _get(fed, "/v1/metrics/timeline")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{fed.server.base}/dashboard#token={TOKEN}")
        expect(page.locator("#kpi-events")).to_have_text(f"{stats['events']:,}")
        expect(page.locator("#kpi-dead-letters")).to_have_text(f"{stats['dead_letters']:,}")
        expect(page.locator("#kpi-profiles")).to_have_text(f"{stats['profiles']:,}")
        expect(page.locator("#status")).to_contain_text(f"{kh.PARTITIONS} partitions")
        for task, windows in timeline["tasks"].items():
            card = page.locator(f'.task[data-task="{task}"]')
            aucs = [w["auc"] for w in windows if w["auc"] is not None]
            points = card.locator(".auc-chart circle.pt")
            expect(points).to_have_count(len(aucs))
            drawn = [float(y) for y in points.evaluate_all("ps => ps.map(p => p.dataset.y)")]
            assert drawn == pytest.approx(aucs)
            expect(card.locator(".logloss-chart circle.pt")).to_have_count(len(windows))
        assert any(w["auc"] is not None for w in timeline["tasks"]["convert"])
        sizes = page.locator('#segments circle.pt[data-series="buyers"]')
        expect(sizes).to_have_count(len(timeline["segments"]))
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        assert errors == []
        browser.close()

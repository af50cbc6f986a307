"""Prometheus ``/metrics`` and the dashboard's JSON, served by ``liveprofile serve`` from a
replayed SQLite store (with a segment history as the segment evaluator commits it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from cli_server import CliServer
from prometheus_client.parser import text_string_to_metric_families

import liveprofile
from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.learn.metrics import Prequential
from liveprofile.serving.metrics import StoreStats
from liveprofile.store import open_store
from liveprofile.store.layout import SEGMENT_HISTORY, Checkpoint
from liveprofile.store.sqlite import SQLiteStore

TOKEN = "metrics-token-789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HISTORY = [(1704067200.0, {"buyers": 3, "browsers": 10}), (1704153600.0, {"buyers": 5})]


@dataclass
class Served:
    store: Path
    user: str
    server: CliServer


def _checkpoint(store: Path) -> Checkpoint:
    backend = open_store(str(store), read_only=True)
    try:
        blob = backend.get_meta("checkpoint")
        assert blob is not None
        return msgspec.msgpack.decode(blob, type=Checkpoint)
    finally:
        backend.close()


def _scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("metrics")
    events = folder / "events.jsonl"
    write_jsonl(events, SyntheticConfig(users=25, days=8, seed=11), invalid_rate=0.02)
    store = folder / "profiles.db"
    config = PipelineConfig.from_dict({"run": {"metrics_window": "1d"}})
    liveprofile.replay(events, store=store, config=config, progress=False)
    writer = SQLiteStore(store)  # what the segment evaluator commits with a batch
    writer.commit({}, {SEGMENT_HISTORY: msgspec.msgpack.encode(HISTORY)})
    writer.commit({}, {"metrics/repurchase": _drifted().to_bytes()})
    writer.close()
    user = json.loads(events.read_text().splitlines()[0])["user_id"]
    env = {"LIVEPROFILE_READ_TOKEN": TOKEN}
    server = CliServer(["serve", "--store", str(store)], env, folder / "serve.log")
    yield Served(store, user, server)
    server.stop()


def _drifted() -> Prequential:
    """Metrics whose loss rises twice, so the detector finds two drifts."""
    m = Prequential(window=86400.0)
    for k in range(6000):
        m.record(0.1 if k % 3000 < 2000 else 0.9, False, 1704067200.0 + 60.0 * k)
    return m


def test_drift_events_are_served(served: Served) -> None:
    found = _drifted().summary()["drift"]
    assert found["detections"] == 2
    got = _scrape(served.server.client.get("/metrics", headers=AUTH).text)
    label = (("task", "repurchase"),)
    assert got[("liveprofile_task_drift_detections", label)] == 2
    assert got[("liveprofile_task_last_drift_seconds", label)] == found["events"][-1]["ts"]
    assert got[("liveprofile_task_drift_detections", (("task", "convert"),))] == 0
    stats = served.server.client.get("/v1/stats", headers=AUTH).json()
    assert stats["tasks"]["repurchase"]["drift"] == found


def test_metrics_need_the_token_by_default(served: Served) -> None:
    assert served.server.client.get("/metrics").status_code == 401
    r = served.server.client.get("/metrics", headers=AUTH)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")


def test_store_figures_match_the_checkpoint(served: Served) -> None:
    ckpt = _checkpoint(served.store)
    got = _scrape(served.server.client.get("/metrics", headers=AUTH).text)
    assert got[("liveprofile_events", ())] == ckpt.events > 0
    assert got[("liveprofile_dead_letters", ())] == ckpt.dead_letters > 0
    assert got[("liveprofile_duplicates", ())] == ckpt.duplicates
    assert got[("liveprofile_watermark_seconds", ())] == ckpt.watermark
    assert got[("liveprofile_profiles", ())] == 25
    backend = open_store(str(served.store), read_only=True)
    try:
        blob = backend.get_meta("metrics/convert")
        assert blob is not None
        summary = Prequential.from_bytes(blob).summary()
    finally:
        backend.close()
    label = (("task", "convert"),)
    assert got[("liveprofile_task_examples", label)] == summary["n"] > 0
    assert got[("liveprofile_task_auc", label)] == pytest.approx(summary["auc"])
    assert got[("liveprofile_task_logloss", label)] == pytest.approx(summary["logloss"])
    # latest sizes only: "browsers" is not in the last entry of the history
    assert got[("liveprofile_segment_members", (("segment", "buyers"),))] == 5
    assert ("liveprofile_segment_members", (("segment", "browsers"),)) not in got


def test_requests_are_counted_per_route_template(served: Served) -> None:
    client = served.server.client
    for _ in range(3):
        assert client.get(f"/v1/profiles/{served.user}", headers=AUTH).status_code == 200
    assert client.get("/v1/profiles/nobody-here", headers=AUTH).status_code == 404
    got = _scrape(client.get("/metrics", headers=AUTH).text)
    route = ("route", "/v1/profiles/{user}")
    ok = ("liveprofile_http_requests_total", (("method", "GET"), route, ("status", "200")))
    missing = ("liveprofile_http_requests_total", (("method", "GET"), route, ("status", "404")))
    assert got[ok] == 3
    assert got[missing] == 1
    count = ("liveprofile_http_request_duration_seconds_count", (("method", "GET"), route))
    assert got[count] == 4


def test_stats_and_timeline_come_from_the_store(served: Served) -> None:
    client = served.server.client
    assert client.get("/v1/stats").status_code == 401
    stats = client.get("/v1/stats", headers=AUTH).json()
    ckpt = _checkpoint(served.store)
    assert (stats["events"], stats["dead_letters"], stats["seq"]) == (
        ckpt.events,
        ckpt.dead_letters,
        ckpt.seq,
    )
    assert stats["segments"] == {"buyers": 5}
    timeline = client.get("/v1/metrics/timeline", headers=AUTH).json()
    assert timeline["window_s"] == 86400.0
    assert timeline["segments"] == [[ts, sizes] for ts, sizes in HISTORY]
    convert = timeline["tasks"]["convert"]
    assert len(convert) >= 7  # eight days of events, one-day windows
    assert sum(w["n"] for w in convert) == stats["tasks"]["convert"]["n"]
    assert [w["start"] for w in convert] == sorted(w["start"] for w in convert)


def test_public_metrics_flag_opens_metrics_only(served: Served, tmp_path: Path) -> None:
    env = {"LIVEPROFILE_READ_TOKEN": TOKEN}
    command = ["serve", "--store", str(served.store), "--public-metrics"]
    server = CliServer(command, env, tmp_path / "serve.log")
    try:
        assert server.client.get("/metrics").status_code == 200
        assert server.client.get("/v1/stats").status_code == 401
        assert server.client.get(f"/v1/profiles/{served.user}").status_code == 401
    finally:
        server.stop()


def test_an_unreadable_segment_history_is_reported_not_fatal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.setup()
    store.commit({}, {SEGMENT_HISTORY: b"not msgpack of the history"})
    snap = StoreStats(lambda: store).snapshot()
    store.close()
    assert snap.segments is None
    assert snap.segments_error is not None and SEGMENT_HISTORY in snap.segments_error

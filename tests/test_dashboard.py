"""The dashboard page in a real browser: Debian's chromium, headless, driven by Playwright
(``executable_path``, no browser download), against ``liveprofile serve`` on a store fed by
``liveprofile generate`` and ``liveprofile replay``.

The charts must hold exactly the points the store's metrics give, the profile viewer the user's
top interest tag as ``liveprofile.read_profile`` reads it; a full-page screenshot is saved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_server import CliServer
from playwright.sync_api import Browser, Page, expect, sync_playwright

import liveprofile

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "dash-token-321"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT_MS = 30_000
SEGMENTS = ("buyers", "recent")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)",
)


@dataclass
class Dashboard:
    folder: Path
    events: Path
    store: Path
    config: Path
    user: str
    server: CliServer


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "liveprofile.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


#: the default tasks and a regression task (the spend of the next 3 days, MAE and RMSE charts)
TASKS_TOML = """
[[tasks]]
name = "like"
on = ["rate"]
label = { kind = "value", threshold = 4.0 }
[[tasks]]
name = "convert"
on = ["view"]
label = { kind = "delayed", conversion = ["purchase"], key = "item", window = "1d" }
[[tasks]]
name = "repurchase"
on = ["purchase"]
label = { kind = "delayed", conversion = ["purchase"], key = "category", window = "14d" }
[[tasks]]
name = "spend_3d"
on = ["purchase"]
learner = { kind = "linreg" }
[tasks.label]
kind = "delayed"
conversion = ["purchase"]
key = "user"
window = "3d"
target = "value"
"""


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    folder = tmp_path_factory.mktemp("dashboard")
    events, store, config = folder / "events.jsonl", folder / "profiles.db", folder / "cfg.toml"
    segments = '[segments]\nbuyers = "frequency >= 1"\nrecent = "days_since_last_event < 1"\n'
    config.write_text('[run]\nmetrics_window = "1d"\nbatch_size = 250\n' + segments + TASKS_TOML)
    # a planted drift strong enough for the convert model's loss to show it (a drift marker)
    _cli("generate", "--out", str(events), "--users", "500", "--days", "10", "--seed", "4",
         "--invalid-rate", "0.01", "--duplicate-rate", "0.01", "--param", "drift_fraction=1",
         "--param", "preference_concentration=0.1", "--param", "purchase_affinity=8",
         "--param", "cart_affinity=8", "--param", "drift_at=0.3")  # fmt: skip
    first_half = str(len(events.read_text().splitlines()) // 2)  # the rest while serving
    _cli("replay", str(events), "--store", str(store), "--config", str(config),
         "--limit", first_half, "--no-progress")  # fmt: skip
    user = json.loads(events.read_text().splitlines()[0])["user_id"]
    env = {"LIVEPROFILE_READ_TOKEN": TOKEN}
    server = CliServer(["serve", "--store", str(store)], env, folder / "serve.log")
    yield Dashboard(folder, events, store, config, user, server)
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


def _page(browser: Browser) -> tuple[Page, list[str]]:
    """A new page, and the list its uncaught script errors are appended to."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def test_a_regression_task_charts_mae_and_rmse_with_its_drift_markers(
    dash: Dashboard, browser: Browser
) -> None:
    client = dash.server.client
    summary = client.get("/v1/stats", headers=AUTH).json()["tasks"]["spend_3d"]
    windows = client.get("/v1/metrics/timeline", headers=AUTH).json()["tasks"]["spend_3d"]
    charted = [w for w in windows if w["mae"] is not None]
    # the first half of ten days, in one-day windows: the examples whose 3-day window closed
    assert len(charted) >= 2
    assert summary["drift"]["loss"] == "absolute error / MAE so far"
    page, errors = _page(browser)
    try:  # closed whatever happens: an open page keeps polling the stats
        page.goto(f"{dash.server.base}/dashboard#token={TOKEN}")
        card = page.locator('.task[data-task="spend_3d"]')
        expect(card.locator(".task-summary")).to_contain_text("MAE")
        expect(card.locator(".auc-chart")).to_have_count(0)
        for chart, key in ((".mae-chart", "mae"), (".rmse-chart", "rmse")):
            points = card.locator(f"{chart} circle.pt")
            expect(points).to_have_count(len(charted))
            drawn = [float(y) for y in points.evaluate_all("ps => ps.map(p => p.dataset.y)")]
            assert drawn == pytest.approx([w[key] for w in charted])
            marks = card.locator(f"{chart} line.marker")  # the drift markers of the spend's errors
            expect(marks).to_have_count(len(summary["drift"]["events"]))
        expect(card.locator(".drifts")).to_have_text(str(summary["drift"]["detections"]))
        assert errors == []
    finally:
        page.close()


def test_page_asks_for_the_token_and_refuses_a_wrong_one(dash: Dashboard, browser: Browser) -> None:
    page, errors = _page(browser)
    page.goto(f"{dash.server.base}/dashboard")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#status")).to_have_text("needs the read token")
    page.fill("#token", "wrong")
    page.click("#token-form button")
    expect(page.locator("#token-error")).to_have_text("token refused")
    page.fill("#token", TOKEN)
    page.click("#token-form button")
    expect(page.locator("#token-form")).to_be_hidden()
    events = dash.server.client.get("/v1/stats", headers=AUTH).json()["events"]
    expect(page.locator("#kpi-events")).to_have_text(f"{events:,}")
    assert page.evaluate("sessionStorage.getItem('liveprofile.token')") == TOKEN
    assert errors == []
    page.close()


def test_charts_and_profile_viewer_show_the_store(
    dash: Dashboard, browser: Browser, tmp_path: Path
) -> None:
    client = dash.server.client
    stats = client.get("/v1/stats", headers=AUTH).json()
    timeline = client.get("/v1/metrics/timeline", headers=AUTH).json()
    page, errors = _page(browser)
    page.goto(f"{dash.server.base}/dashboard#token={TOKEN}")
    assert "token" not in page.url  # taken out of the fragment, so not kept in the history

    expect(page.locator("#kpi-events")).to_have_text(f"{stats['events']:,}")
    expect(page.locator("#kpi-dead-letters")).to_have_text(f"{stats['dead_letters']:,}")
    expect(page.locator("#kpi-profiles")).to_have_text(f"{stats['profiles']:,}")
    assert stats["dead_letters"] > 0 and stats["duplicates"] > 0
    expect(page.locator("#kpi-duplicates")).to_have_text(f"{stats['duplicates']:,}")

    charted = drifts = 0
    for task, windows in timeline["tasks"].items():
        if task == "spend_3d":  # a regression task: MAE and RMSE charts (the test below)
            continue
        card = page.locator(f'.task[data-task="{task}"]')
        expect(card).to_have_count(1)
        aucs = [w["auc"] for w in windows if w["auc"] is not None]
        auc_points = card.locator(".auc-chart circle.pt")
        loss_points = card.locator(".logloss-chart circle.pt")
        expect(auc_points).to_have_count(len(aucs))
        expect(loss_points).to_have_count(len(windows))
        drawn = [float(y) for y in auc_points.evaluate_all("ps => ps.map(p => p.dataset.y)")]
        assert drawn == pytest.approx(aucs)
        drawn = [float(y) for y in loss_points.evaluate_all("ps => ps.map(p => p.dataset.y)")]
        assert drawn == pytest.approx([w["logloss"] for w in windows])
        charted += len(aucs)
        found = stats["tasks"][task]["drift"]["events"]
        drifts += len(found)
        for chart in (".auc-chart", ".logloss-chart"):  # one marker per drift, at its time
            marks = card.locator(f"{chart} line.marker")
            expect(marks).to_have_count(len(found))
            drawn = [float(t) for t in marks.evaluate_all("ms => ms.map(m => m.dataset.ts)")]
            assert drawn == [e["ts"] for e in found]
        expect(card.locator(".drifts")).to_have_text(str(len(found)))
    assert drifts >= 1  # the planted drift is marked
    assert charted >= 5  # ten days of events in one-day windows: the chart has a real line

    history = timeline["segments"]
    assert history is not None and {n for _, sizes in history for n in sizes} == set(SEGMENTS)
    points = page.locator("#segments circle.pt")
    for name in SEGMENTS:  # one point per commit and segment, at the committed size
        drawn = points.and_(page.locator(f'[data-series="{name}"]'))
        expect(drawn).to_have_count(len(history))
        sizes = [float(y) for y in drawn.evaluate_all("ps => ps.map(p => p.dataset.y)")]
        assert sizes == [s.get(name, 0) for _, s in history]
    assert max(s.get("buyers", 0) for _, s in history) > 0

    profile = liveprofile.read_profile(dash.store, dash.user)
    top_tag = max(profile["interests"].items(), key=lambda kv: kv[1])[0]
    page.fill("#user", dash.user)
    page.click("#profile-form button")
    expect(page.locator("#profile")).to_be_visible()
    expect(page.locator("#profile-head")).to_contain_text(dash.user)
    bars = page.locator("#interests .bar")
    expect(bars).to_have_count(min(15, len(profile["interests"])))
    assert bars.first.get_attribute("data-tag") == top_tag
    for kind, count in profile["counts"].items():
        expect(page.locator("#counters")).to_contain_text(kind)
        expect(page.locator("#counters")).to_contain_text(f"{count:,}")
    chips = page.locator("#profile-segments .chip")
    expect(chips).to_have_count(len(profile["segments"]))
    assert chips.all_inner_texts() == profile["segments"]
    if "recent" in profile:
        expect(page.locator("#recent tr")).to_have_count(1 + len(profile["recent"]))

    page.fill("#user", "nobody-here")
    page.click("#profile-form button")
    expect(page.locator("#profile-error")).to_have_text("no profile for user 'nobody-here'")
    page.fill("#user", dash.user)
    page.click("#profile-form button")
    expect(page.locator("#profile")).to_be_visible()

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"dashboard screenshot: {shot}")
    assert errors == []
    page.close()


def test_throughput_is_measured_while_a_replay_commits(dash: Dashboard) -> None:
    client = dash.server.client
    before = client.get("/v1/stats", headers=AUTH).json()
    _cli("replay", str(dash.events), "--store", str(dash.store), "--config", str(dash.config),
         "--no-progress")  # fmt: skip
    after = client.get("/v1/stats", headers=AUTH).json()
    applied = after["events"] - before["events"]
    assert applied > 0 and after["seq"] > before["seq"]
    assert after["throughput"]["events"] == applied
    assert after["throughput"]["events_per_s"] == pytest.approx(
        applied / after["throughput"]["seconds"]
    )
    assert after["throughput"]["history"][-1][1] == after["throughput"]["events_per_s"]

"""The command line, through the real entry point (a subprocess running `liveprofile`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.engine.local import LocalRunner
from liveprofile.events.deadletter import DeadLetter, read_dead_letters
from liveprofile.store import SQLiteStore

EXE = shutil.which("liveprofile")
#: the shared MovieLens copy, in the nearest folder above the checkout that has one
ML = next(
    (
        found
        for parent in Path(__file__).resolve().parents
        if (found := parent / "shared" / "data" / "ml-latest-small").is_dir()
    ),
    Path("shared/data/ml-latest-small"),
)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert EXE is not None, "the liveprofile entry point is not installed"
    proc = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "events.jsonl"
    write_jsonl(
        path, SyntheticConfig(users=120, days=10, seed=3), invalid_rate=0.02, duplicate_rate=0.02
    )
    return path


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["quickstart"],
        ["replay"],
        ["profile"],
        ["warm-start"],
        ["generate"],
        ["dataset"],
        ["dead-letters"],
        ["publish"],
        ["worker"],
        ["collect"],
        ["status"],
        ["redis-dead-letters"],
        ["redrive"],
        ["serve"],
    ],
)
def test_every_command_explains_itself(command: list[str]) -> None:
    out = run(*command, "--help").stdout
    assert "Usage:" in out and len(out.splitlines()) > 5


def test_replay_report_plot_and_profile(events: Path, tmp_path: Path) -> None:
    store, report, plot = tmp_path / "p.db", tmp_path / "r.json", tmp_path / "m.png"
    run(
        "replay",
        str(events),
        "--store",
        str(store),
        "--report",
        str(report),
        "--plot",
        str(plot),
        "--no-progress",
    )
    summary = json.loads(report.read_text())
    lines = events.read_text().splitlines()
    assert summary["events"] + summary["dead_letters"] + summary["duplicates"] == len(lines)
    assert summary["dead_letters"] > 0 and summary["duplicates"] > 0
    users = set()
    for line in lines:
        try:
            users.add(str(json.loads(line)["user_id"]))
        except (ValueError, KeyError):
            continue
    assert summary["events_per_s"] > 0 and summary["profiles"] == len(users) > 100
    convert = summary["tasks"]["convert"]
    assert convert["n"] > 0 and 0.5 < convert["auc"] <= 1.0 and convert["logloss"] > 0
    assert convert["windows"] and all("auc" in w and "n" in w for w in convert["windows"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    letters = read_dead_letters(str(store) + ".deadletters.jsonl")
    assert len(letters) == summary["dead_letters"] and all(d.reason for d in letters)

    user = json.loads(lines[0])["user_id"]
    view = json.loads(run("profile", user, "--store", str(store), "--json").stdout)
    assert view["user"] == user and view["events"] > 0 and view["interests"]
    table = run("profile", user, "--store", str(store)).stdout
    assert f"profile of {user}" in table and "interests" in table

    run("replay", str(events), "--store", str(store), "--report", str(report), "--no-progress")
    resumed = json.loads(report.read_text())
    assert resumed["events"] == 0, "a finished source resumes at its end"


def test_errors_have_clear_messages_and_exit_codes(tmp_path: Path) -> None:
    missing = run(
        "replay", str(tmp_path / "nope.jsonl"), "--store", str(tmp_path / "x.db"), check=False
    )
    assert missing.returncode == 66 and "no such file" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[profile]\ntop_k = 0\n")
    config = run("replay", str(tmp_path / "nope.jsonl"), "--config", str(bad), check=False)
    assert config.returncode != 0
    unknown = run("profile", "nobody", "--store", str(tmp_path / "none.db"), check=False)
    assert unknown.returncode == 74 and "no store" in unknown.stderr


def test_unknown_user_is_reported(events: Path, tmp_path: Path) -> None:
    store = tmp_path / "p.db"
    run("replay", str(events), "--store", str(store), "--no-progress")
    proc = run("profile", "no-such-user", "--store", str(store), check=False)
    assert proc.returncode == 1 and "no profile for user 'no-such-user'" in proc.stderr


def test_movielens_csv_with_mapping_equals_preset(tmp_path: Path) -> None:
    """On the first 3,000 ratings of the shared MovieLens copy, which the checkout needs above
    it, as CI has it (not skipped without it: the test fails saying what is missing)."""
    assert ML.is_dir(), (
        f"this test needs MovieLens ml-latest-small in shared/data/ in a folder above the "
        f"checkout (CI's layout); there is none above {Path(__file__).resolve().parents[1]}"
    )
    head = tmp_path / "ratings.csv"
    with (ML / "ratings.csv").open() as fh:
        head.write_text("".join(fh.readlines()[:3001]))
    shutil.copy(ML / "movies.csv", tmp_path / "movies.csv")
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    run("replay", str(head), "--format", "movielens", "--store", str(tmp_path / "a.db"),
        "--report", str(a), "--no-progress")  # fmt: skip
    run(
        "replay",
        str(head),
        "--store",
        str(tmp_path / "b.db"),
        "--report",
        str(b),
        "--no-progress",
        "--set",
        "type=rate",
        "--map",
        "user_id=userId",
        "--map",
        "item_id=movieId",
        "--map",
        "value=rating",
        "--map",
        "ts=timestamp",
        "--map",
        "event_id={userId}:{movieId}",
        "--item-tags",
        str(tmp_path / "movies.csv"),
    )
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["events"] == rb["events"] == 3000
    assert ra["tasks"]["like"]["auc"] == rb["tasks"]["like"]["auc"] > 0.55


def test_movielens_without_its_files_says_where_they_come_from(tmp_path: Path) -> None:
    missing = tmp_path / "ml-latest-small" / "ratings.csv"
    proc = run("replay", str(missing), "--format", "movielens", "--store", str(tmp_path / "m.db"),
               "--no-progress", check=False)  # fmt: skip
    assert proc.returncode != 0
    said = proc.stderr.replace("\n", "")  # as the terminal wrapped it
    assert f"no MovieLens ratings at {missing}" in said
    assert "grouplens.org" in said and "Traceback" not in said


def test_dataset_events_replay_like_the_quick_start(tmp_path: Path) -> None:
    """The exported events and config, replayed, give the quick start's metrics and profiles."""
    events, config = tmp_path / "cj.jsonl", tmp_path / "cj.toml"
    run("dataset", "completejourney", "--out", str(events), "--config", str(config),
        "--limit", "100000")  # fmt: skip
    assert len(events.read_text().splitlines()) == 100000
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run("quickstart", "--limit", "100000", "--store", str(tmp_path / "a.db"), "--report", str(a),
        "--no-progress")  # fmt: skip
    run("replay", str(events), "--config", str(config), "--store", str(tmp_path / "b.db"),
        "--report", str(b), "--no-progress")  # fmt: skip
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["events"] == rb["events"] == 100000 and rb["dead_letters"] == 0
    assert ra["tasks"]["repurchase"] == rb["tasks"]["repurchase"]
    assert ra["tasks"]["repurchase"]["n"] > 1000
    household = json.loads(events.read_text().splitlines()[-1])["user_id"]
    views = [
        json.loads(run("profile", household, "--store", str(tmp_path / s), "--json").stdout)
        for s in ("a.db", "b.db")
    ]
    assert views[0] == views[1] and views[0]["events"] > 0


def test_warm_start_then_replay(events: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.lpm"
    run("warm-start", str(events), "--out", str(model), "--no-progress")
    assert model.stat().st_size > 0
    cold, warm = tmp_path / "cold.json", tmp_path / "warm.json"
    run(
        "replay",
        str(events),
        "--store",
        str(tmp_path / "c.db"),
        "--report",
        str(cold),
        "--limit",
        "3000",
        "--no-progress",
    )
    run(
        "replay",
        str(events),
        "--store",
        str(tmp_path / "w.db"),
        "--report",
        str(warm),
        "--limit",
        "3000",
        "--no-progress",
        "--warm-start",
        str(model),
    )
    c, w = json.loads(cold.read_text()), json.loads(warm.read_text())
    # the warm model has seen these events already: it must predict them better than zero
    assert w["tasks"]["convert"]["logloss"] < c["tasks"]["convert"]["logloss"]


def test_dead_letters_written_but_not_committed_are_cut_back(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    dead = tmp_path / "dead.jsonl"
    runner = LocalRunner(PipelineConfig(), SQLiteStore(store), dead)
    runner.dead_letters.write([DeadLetter("x", "uncommitted", "test", 0)])
    runner.dead_letters.flush()
    runner.close()  # no commit happened after the write, as when killed there
    assert dead.stat().st_size > 0
    LocalRunner(PipelineConfig(), SQLiteStore(store), dead).close()
    assert dead.stat().st_size == 0

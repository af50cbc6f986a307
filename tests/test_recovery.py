"""Kill a real replay process at random points, restart it, and compare with a clean run."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from children import popen

from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.store.sqlite import SQLiteStore

CONFIG = """
[run]
batch_size = 400
[features]
bits = 14
"""


def _replay(events: Path, store: Path, config: Path) -> subprocess.Popen[bytes]:
    log = store.with_suffix(".log")
    with open(log, "ab") as err:
        return popen(
            [
                sys.executable,
                "-m",
                "liveprofile.cli",
                "replay",
                str(events),
                "--store",
                str(store),
                "--config",
                str(config),
                "--no-progress",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _committed_events(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            row = db.execute("SELECT count(*) FROM rows WHERE ns = 'profile'").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def _dump(store: Path) -> dict[str, object]:
    with sqlite3.connect(store) as db:
        rows = dict(((ns, key), bytes(v)) for ns, key, v in db.execute("SELECT * FROM rows"))
        meta = {name: bytes(v) for name, v in db.execute("SELECT * FROM meta")}
    reader = SQLiteStore(store, read_only=True)  # a model: its whole write and deltas replayed
    for name in meta:
        if name.startswith("model/"):
            meta[name] = reader.get_meta(name) or b""
    reader.close()
    return {"rows": rows, "meta": meta}


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(
        path, SyntheticConfig(users=300, days=21, seed=7), invalid_rate=0.01, duplicate_rate=0.01
    )
    return path


def test_killed_and_restarted_replay_equals_clean_run(events: Path, tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(CONFIG)
    clean = tmp_path / "clean.db"
    proc = _replay(events, clean, config)
    assert proc.wait(timeout=300) == 0, clean.with_suffix(".log").read_text()

    crashed = tmp_path / "crashed.db"
    rng = random.Random(1)
    kills = 0
    for _ in range(3):
        proc = _replay(events, crashed, config)
        # wait until the run has committed something, then kill it without warning
        deadline = time.monotonic() + 120
        while _committed_events(crashed) == 0 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 0.6))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    proc = _replay(events, crashed, config)
    assert proc.wait(timeout=300) == 0, crashed.with_suffix(".log").read_text()
    assert kills >= 1, "the replay finished before it could be killed; make the data larger"

    a, b = _dump(clean), _dump(crashed)
    assert a["meta"] == b["meta"]
    assert a["rows"] == b["rows"]
    dead_clean = Path(str(clean) + ".deadletters.jsonl").read_bytes()
    dead_crashed = Path(str(crashed) + ".deadletters.jsonl").read_bytes()
    assert dead_clean == dead_crashed
    assert dead_clean.count(b"\n") > 0

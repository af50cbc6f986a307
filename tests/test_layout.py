"""The package layout: the command line loads its commands lazily, the stored-state layout names
everything stored, and no module imports one that imports it back."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import click
import pytest

from liveprofile.api import replay
from liveprofile.cli import COMMANDS, main
from liveprofile.config import PipelineConfig, RiskConfig, RunConfig
from liveprofile.events.schema import FORGET
from liveprofile.store import layout

HEAVY = ("numba", "pandas", "river", "numpy", "fastapi", "redis", "liveprofile.api")


def _imported_after(code: str) -> set[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(done.stdout.split())


def test_help_imports_no_heavy_module() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from liveprofile.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\n"
        "assert result.exit_code == 0 and 'worker' in result.output, result.output"
    )
    assert _imported_after(code) == set()


def test_a_command_imports_what_it_needs_when_it_runs() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from liveprofile.cli import main\n"
        "result = CliRunner().invoke(main, ['profile', 'u1', '--store', 'memory://'])\n"
        "assert result.exit_code != 0, result.output"
    )
    assert "liveprofile.api" in _imported_after(code)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_listed_command_loads_under_its_name(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command) and command.name == name
    assert command.help and len(command.help.split()) > 5


def test_listed_commands_are_all_there_is() -> None:
    assert main.list_commands(click.Context(main)) == sorted(COMMANDS)
    assert main.get_command(click.Context(main), "no-such-command") is None


def test_the_layout_names_everything_a_replay_stores(tmp_path: Path) -> None:
    """Every namespace and meta blob a replay writes (identity links, expiry, erasure, anomaly
    scores and segments included) is one that :mod:`liveprofile.store.layout` declares."""
    day = 86400
    events: list[dict[str, object] | str] = [
        {"event_id": "0", "user_id": "dan", "type": "view", "ts": 0, "item_id": "i2"},
        {"event_id": "1", "anonymous_id": "a1", "type": "view", "ts": 4 * day, "item_id": "i1"},
        {
            "event_id": "2",
            "user_id": "ann",
            "anonymous_id": "a1",
            "type": "purchase",
            "ts": 4 * day + 60,
            "item_id": "i1",
            "category": "tea",
            "value": 9.0,
        },
        {"event_id": "3", "user_id": "bob", "type": "view", "ts": 4 * day, "item_id": "i2"},
        {"event_id": "4", "user_id": "bob", "type": FORGET, "ts": 4 * day + 1},
        {"event_id": "5", "user_id": "cy", "type": "view", "ts": 5 * day, "item_id": "i2"},
        "not json",
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e) for e in events))
    config = PipelineConfig(
        segments={"buyers": "frequency >= 1"},
        run=RunConfig(batch_size=2, profile_ttl="2d"),
        risk=RiskConfig(anomaly=True),
    )
    replay(path, store=tmp_path / "p.db", config=config, progress=False)
    db = sqlite3.connect(tmp_path / "p.db")
    namespaces = {ns for (ns,) in db.execute("SELECT DISTINCT ns FROM rows")}
    metas = {name for (name,) in db.execute("SELECT name FROM meta")}
    db.close()
    rows = {layout.PROFILES, layout.ITEMS, layout.PENDING, layout.DEDUP, layout.ALIASES}
    rows |= {layout.EXPIRY, layout.DEAD_LETTERS}
    assert {layout.PROFILES, layout.ALIASES, layout.EXPIRY} <= namespaces
    assert {ns for ns in namespaces if not ns.startswith(layout.SEGMENT_PREFIX)} <= rows
    assert layout.segment_namespace("buyers") in namespaces
    tasks = {f(t.name) for t in config.tasks for f in (layout.model_meta, layout.metrics_meta)}
    blobs = {layout.CHECKPOINT, layout.CONFIG, layout.POPULATION, layout.SEGMENT_HISTORY}
    assert metas == blobs | {layout.ANOMALY} | tasks

"""The README's examples run: the Python API block and the config file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from liveprofile.config import PipelineConfig
from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
from liveprofile.engine.core import Core

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "events.jsonl", SyntheticConfig(users=60, days=7, seed=1))
    (block,) = _blocks("python")
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)
    summary = scope["summary"]
    assert isinstance(summary, dict) and summary["events"] > 0
    assert (tmp_path / "shop.db").exists()


def test_config_example_is_valid() -> None:
    segments, block = _blocks("toml")[:2]
    config = PipelineConfig.from_toml(block)
    assert [t.name for t in config.tasks] == ["like", "convert"]
    assert config.tasks[1].learner.kind == "hoeffding"
    assert set(config.traits) == {"big_spender", "dairy_fan"}
    assert set(config.segments) == {"big_spenders"}
    rules = PipelineConfig.from_toml(segments).segments
    assert set(rules) == {"big_spenders", "dairy_fans", "likely_buyers"}
    Core(PipelineConfig.from_toml(segments))  # the rules compile


def test_crm_example_is_valid() -> None:
    (block,) = [b for b in _blocks("toml") if "repeat_30d" in b]
    config = PipelineConfig.from_toml(block)
    repeat, spend = config.tasks
    assert (repeat.label.key, spend.label.key, spend.regression) == ("user", "user", True)
    core = Core(config)  # the segment rule compiles
    assert core.compiled is not None  # a regression task takes the compiled step too

"""Compiling the step ahead (``engine/warmup.py``, ``liveprofile compile``, ``worker --warm-up``).

After ``warm_up(config)``, replaying a stream under user ids, a login stream and a stream of
returning customers with that config compiles (or loads from numba's cache) no function
specialisation more: the first real batch with a login does not stall. Counted in a fresh
process, so what other tests compiled does not count; the same replays without the warm-up do
add specialisations, so the count can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from redis_server import RedisServer

from liveprofile.cli import main

SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
import msgspec
from liveprofile.config import LabelConfig, PipelineConfig, RunConfig, TaskConfig
from liveprofile.datasets.logins import returning_logins, with_logins
from liveprofile.datasets.synthetic import SyntheticConfig, generate
from liveprofile.engine.local import LocalRunner
from liveprofile.engine.warmup import compiled_signatures, warm_up
from liveprofile.events.sources import JsonlSource
from liveprofile.store.sqlite import SQLiteStore

label = LabelConfig(kind="delayed", conversion=["purchase"], key="item", window="1d")
config = PipelineConfig(
    tasks=[TaskConfig("convert", on=["view"], label=label)], run=RunConfig(batch_size=1500)
)
if sys.argv[1] == "warm":
    warm_up(config)
shop = SyntheticConfig(users=120, days=5, seed=11)
streams = {
    "plain": generate(shop),
    "logins": with_logins(generate(shop)),
    "returning": returning_logins(generate(shop)),
}
out = {}
for name, events in streams.items():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"\n".join(msgspec.json.encode(e) for e in events) + b"\n")
        store = SQLiteStore(Path(tmp) / "profiles.db")
        store.setup()
        runner = LocalRunner(config, store, Path(tmp) / "dead.jsonl")
        before = compiled_signatures()
        runner.run(JsonlSource(path))
        out[name] = compiled_signatures() - before
        runner.close()
print(json.dumps(out))
"""


def _new_specialisations(mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_after_the_warm_up_no_stream_compiles_anything() -> None:
    assert _new_specialisations("warm") == {"plain": 0, "logins": 0, "returning": 0}


def test_without_it_the_streams_compile_their_paths() -> None:
    cold = _new_specialisations("cold")
    assert cold["plain"] > 0  # the kernel and its helpers, loaded from the cache or compiled
    assert cold["logins"] + cold["returning"] > 0  # the folds of visitors into users


def test_compile_command(tmp_path: Path) -> None:
    config = tmp_path / "shop.toml"
    config.write_text("[run]\nbatch_size = 500\n[features]\nbits = 16\n")
    result = CliRunner().invoke(main, ["compile", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["events"] > 1000 and figures["seconds"] > 0


def test_worker_warms_up_before_reading(server: RedisServer) -> None:
    """``worker --warm-up`` compiles first, then reads (here: an empty stream, until idle)."""
    args = ["worker", "--redis", server.url, "--prefix", "warmup", "--warm-up"]
    result = CliRunner().invoke(main, [*args, "--idle-exit", "1", "--block-ms", "10"])
    assert result.exit_code == 0, result.output
    assert "step compiled for the config in" in result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["events"] == 0

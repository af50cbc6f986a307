"""The compiled step run uncompiled (``LIVEPROFILE_NO_JIT=1``, see ``liveprofile.engine.jit``)
gives the state the compiled step gives, to the byte: the flag is for stepping through the
kernel with a debugger, so what it runs must be the same code with the same results.

The uncompiled run is a subprocess (the flag is read when the engine is imported); it runs a
small pipeline with logins (the kernel stops for the Python lifecycle), erasure-free late and
duplicate events, a delayed and an immediate task, behaviour value features and a TTL, and
prints a digest of the stored state, which this process computes again with the kernel
compiled.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from liveprofile.config import ProfileConfig, RunConfig
from liveprofile.engine import jit
from liveprofile.engine.core import Core

HERE = Path(__file__).parent


def digest() -> tuple[str, str, int]:
    """The digest of the stored state after a small pipeline on the compiled engine, whether
    ``kernel.run`` is compiled, and the events at which the kernel stopped for the lifecycle."""
    from test_compiled import chunks, config, messed_up, run, snapshot, synthetic

    from liveprofile.engine import kernel

    events = messed_up(synthetic(seed=3, users=12, days=3, logins=True), seed=4)[:500]
    cfg = config(
        profile=ProfileConfig(top_k=4, outcome_keys=3, behaviour_keys=4, behaviour_value=True),
        run=RunConfig(dedup_window=500, profile_ttl="2d"),
    )
    store, core = run(cfg, chunks(events, 120))
    assert isinstance(core, Core)
    state = snapshot(store, cfg)
    assert state["rows"]["profile"] and state["rows"]["pending"]  # type: ignore[index]
    blob = msgspec.msgpack.encode(state)
    kind = type(kernel.run).__name__
    return hashlib.sha256(blob).hexdigest(), kind, core.compiled.stopped


def test_the_step_run_uncompiled_gives_the_compiled_state() -> None:
    env = {**os.environ, "LIVEPROFILE_NO_JIT": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    code = "import json, test_uncompiled; print(json.dumps(test_uncompiled.digest()))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uncompiled, kind, stopped = json.loads(done.stdout.strip().splitlines()[-1])
    assert kind == "Uncompiled", "the flag left the kernel compiled"
    compiled, here, stopped_here = digest()
    assert here == "CPUDispatcher" and not jit.NO_JIT
    assert stopped == stopped_here > 0, "the logins stop the kernel for the lifecycle"
    assert uncompiled == compiled

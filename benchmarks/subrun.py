"""A benchmark's timed part in a process of its own, with this checkout's code or another's.

The benchmarks that compare two versions of the code side by side (``--baseline OLD/src``)
run each measurement as ``python -c CODE ARGS...`` with the other version's ``src/`` first on
``PYTHONPATH``, and read the JSON object the code prints last.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def run_json(code: str, argv: list[str], src: str | None = None) -> dict[str, Any]:
    """Run ``code`` with ``argv`` in a fresh interpreter (``src`` first on its path when
    given) and return the JSON object on the last line it prints."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))

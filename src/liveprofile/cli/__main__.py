"""``python -m liveprofile.cli``: the same command line as the ``liveprofile`` entry point."""

from __future__ import annotations

from liveprofile.cli import main

main()

"""Shared test settings."""

from __future__ import annotations

from hypothesis import settings

# Reproducible property tests: a fixed search (no example database written into the work tree)
# and no per-example wall-clock deadline.
settings.register_profile("liveprofile", derandomize=True, database=None, deadline=None)
settings.load_profile("liveprofile")

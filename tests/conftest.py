"""Shared test settings."""

from __future__ import annotations

import pytest
from hypothesis import settings

# The conformance suites ship in the package; their asserts explain failures as test asserts do.
pytest.register_assert_rewrite("liveprofile.checks")

# Reproducible property tests: a fixed search (no example database written into the work tree)
# and no per-example wall-clock deadline.
settings.register_profile("liveprofile", derandomize=True, database=None, deadline=None)
settings.load_profile("liveprofile")

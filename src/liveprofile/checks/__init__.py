"""Conformance suites, shipped with the package as ``river.checks`` is, so a third-party store or
learner can run the same checks the project's own stores and learners pass.

- :mod:`liveprofile.checks.store`: :func:`~liveprofile.checks.store.check_store` over a
  :class:`~liveprofile.checks.store.StoreFactory` (memory, SQLite, Redis, scoped views, yours)
- :mod:`liveprofile.checks.learner`: :func:`~liveprofile.checks.learner.check_learner` over a
  :class:`~liveprofile.checks.learner.LearnerFactory` (built-in linear models, River models, yours)

Each runs every check and raises :class:`AssertionError` naming the first that fails; the lists
of checks (``STORE_CHECKS``, ``LIFECYCLE_CHECKS``, ``LEARNER_CHECKS``) let a test suite run them
one by one, as ``tests/test_store_conformance.py`` and ``tests/test_learner_conformance.py`` do.
"""

from __future__ import annotations

from liveprofile.checks.learner import LearnerFactory, check_learner
from liveprofile.checks.store import StoreFactory, check_store

__all__ = ["LearnerFactory", "StoreFactory", "check_learner", "check_store"]

"""Serving: what reads the store and answers over HTTP or to applications.

``profiles`` (the read API), ``collector`` and ``sinks`` (the HTTP event collector and where it
writes), ``recommend`` (ranking items for a user with a task's model), ``scoring`` (what a single
score reads of a profile, and the reasons of a score), ``segments`` (sizes,
members, exports), ``metrics`` and ``dashboard`` (Prometheus metrics and the live page),
``privacy`` (the HTTP erasure endpoint).
"""

from __future__ import annotations

#: most candidates one recommendation request may name (and the most items one answer may hold)
MAX_CANDIDATES = 1000

__all__ = ["MAX_CANDIDATES"]

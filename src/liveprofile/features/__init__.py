"""Features, built from the event, the user's profile *before* it and item statistics, with
crosses, hashed into sparse vectors (``hashing``)."""

from __future__ import annotations

from liveprofile.features.hashing import FeatureBuilder

__all__ = ["FeatureBuilder"]

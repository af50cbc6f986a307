"""Features: the event, the user's profile before it, item statistics, and crosses, hashed."""

from __future__ import annotations

from liveprofile.features.hashing import FeatureBuilder

__all__ = ["FeatureBuilder"]

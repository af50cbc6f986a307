"""Profiles: per-user state driven by event time. ``state`` (the profile and how one event
changes it), ``decay`` (order-independent decayed sums), ``identity`` (folding an anonymous
visitor into the known user), ``risk`` (recent events, velocity counts, anomaly scores),
``traits`` and ``segments`` (named rules over profile fields), ``population`` (RFM scores),
``items`` and ``popular`` (per-item statistics and the most popular items)."""

from __future__ import annotations

from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import Profile, ProfileUpdater

__all__ = ["ItemStats", "Profile", "ProfileUpdater"]

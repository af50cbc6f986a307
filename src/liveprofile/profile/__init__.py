"""Profiles: per-user state driven by event time (decayed counters and interests, RFM, traits)."""

from __future__ import annotations

from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import Profile, ProfileUpdater

__all__ = ["ItemStats", "Profile", "ProfileUpdater"]

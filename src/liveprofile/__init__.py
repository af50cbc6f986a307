"""liveprofile: real-time user profiles and online learning from event streams.

>>> import liveprofile
>>> sorted(liveprofile.__all__)[:4]
['Core', 'Event', 'LiveprofileError', 'LocalRunner']
"""

from __future__ import annotations

from liveprofile.api import open_source, read_profile, recommend, replay, warm_start
from liveprofile.config import PipelineConfig
from liveprofile.engine.core import Core
from liveprofile.engine.local import LocalRunner
from liveprofile.engine.state import PipelineState
from liveprofile.errors import LiveprofileError
from liveprofile.events.schema import Event
from liveprofile.store import MemoryStore, SQLiteStore, open_store

__all__ = [
    "Core",
    "Event",
    "LiveprofileError",
    "LocalRunner",
    "MemoryStore",
    "PipelineConfig",
    "PipelineState",
    "SQLiteStore",
    "open_source",
    "open_store",
    "read_profile",
    "recommend",
    "replay",
    "warm_start",
]

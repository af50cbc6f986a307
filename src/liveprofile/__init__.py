"""liveprofile: real-time user profiles and online learning from event streams.

The packages follow the data flow: ``events`` (schema, sources, dead letters) -> ``features``
(hashed feature vectors) -> ``profile`` (per-user state) -> ``learn`` (online learners, labels,
metrics) -> ``store`` (the stored-state layout and the backends) -> ``serving`` (HTTP read API,
collector, recommendations, segments); ``engine`` holds the step and the runners around it,
``cli`` the command line, and :mod:`liveprofile.api` the Python API over all of them.

The names below are imported on first use, so ``import liveprofile`` (and the command line's
help) stays quick.

>>> import liveprofile
>>> sorted(liveprofile.__all__)[:4]
['Core', 'Event', 'LiveprofileError', 'LocalRunner']
>>> liveprofile.MemoryStore.__name__
'MemoryStore'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from liveprofile.api import open_source, read_profile, recommend, replay, warm_start
    from liveprofile.config import PipelineConfig
    from liveprofile.engine.core import Core
    from liveprofile.engine.local import LocalRunner
    from liveprofile.engine.state import PipelineState
    from liveprofile.errors import LiveprofileError
    from liveprofile.events.schema import Event
    from liveprofile.store import MemoryStore, SQLiteStore, open_store

#: public name -> the module that defines it
_WHERE = {
    "Core": "liveprofile.engine.core",
    "Event": "liveprofile.events.schema",
    "LiveprofileError": "liveprofile.errors",
    "LocalRunner": "liveprofile.engine.local",
    "MemoryStore": "liveprofile.store",
    "PipelineConfig": "liveprofile.config",
    "PipelineState": "liveprofile.engine.state",
    "SQLiteStore": "liveprofile.store",
    "open_source": "liveprofile.api",
    "open_store": "liveprofile.store",
    "read_profile": "liveprofile.api",
    "recommend": "liveprofile.api",
    "replay": "liveprofile.api",
    "warm_start": "liveprofile.api",
}

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'liveprofile' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

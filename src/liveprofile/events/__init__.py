"""Events: the schema, parsing and validation, sources, and the dead-letter sink."""

from __future__ import annotations

from liveprofile.events.deadletter import DeadLetter, DeadLetterFile
from liveprofile.events.schema import Event, EventParser, parse_timestamp

__all__ = ["DeadLetter", "DeadLetterFile", "Event", "EventParser", "parse_timestamp"]

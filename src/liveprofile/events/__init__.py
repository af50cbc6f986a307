"""Events, the first stage of the flow: ``schema`` (the event and its validation), ``sources``
(JSON Lines and CSV files, read from a committed offset in batches), ``columns`` (a batch as
columns), ``dedup`` (de-duplication by event id), ``deadletter`` (the sink for rejected records,
with the reason); events on partitioned Redis Streams are in :mod:`liveprofile.redis`."""

from __future__ import annotations

from liveprofile.events.deadletter import DeadLetter, DeadLetterFile
from liveprofile.events.schema import Event, EventParser, parse_timestamp

__all__ = ["DeadLetter", "DeadLetterFile", "Event", "EventParser", "parse_timestamp"]

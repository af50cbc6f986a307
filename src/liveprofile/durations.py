"""Durations in config files: ``"14d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"200ms"``, ``"2w"``
or seconds.

>>> parse_duration("14d")
1209600.0
>>> parse_duration(90)
90.0
>>> parse_duration("1.5h")
5400.0
>>> parse_duration("200ms")
0.2

and back, for people: an event time, and a span of event time.

>>> format_time(1.5e9), format_span(93_600.0), format_span(5400.0), format_span(42.0)
('2017-07-14 02:40:00', '1d 2h', '1h 30m', '42s')
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

from liveprofile.errors import ConfigError

#: seconds in an hour and in a day, the units of event time every module counts in
HOUR = 3600.0
DAY = 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": HOUR, "d": DAY, "w": 7 * DAY}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|[smhdw]?)\s*$")


@functools.lru_cache(maxsize=256, typed=True)  # configs read theirs per event
def parse_duration(value: str | float | int) -> float:
    """Return a duration in seconds; raise :class:`ConfigError` with an example on bad input."""
    if isinstance(value, bool):
        raise ConfigError(f"duration must be a number of seconds or like '14d', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"duration must not be negative, got {value!r}")
        return float(value)
    match = _PATTERN.match(value)
    if match is None:
        raise ConfigError(
            f"cannot read duration {value!r}: "
            "write a number with a unit ms, s, m, h, d or w, e.g. '14d'"
        )
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


def format_time(ts: float) -> str:
    """An event time (seconds since the epoch) as UTC, to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_span(seconds: float) -> str:
    """A span of time in its two largest units of days, hours, minutes and seconds."""
    left = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])

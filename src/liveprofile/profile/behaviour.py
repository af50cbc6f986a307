"""A user's behaviour on the items and categories they touched.

Per profile, two bounded maps (:attr:`Profile.behaviour_items` and
:attr:`Profile.behaviour_categories`) hold, per key, a few floats packed as little-endian float64
bytes (one object a key, which keeps decoding and garbage collection cheap; see :func:`unpack`):
the event time of the last interaction, whether the user converted on it (an event of a
``profile.monetary_types`` type: 1.0, else 0.0), then the decayed count of each
``profile.behaviour_types`` type, in that order, and with ``profile.behaviour_value`` the
decayed sum of the values of those events (an event without a value adds 0). Counts and sums are
forward-decayed with the counters' half-life and stored relative to the profile's anchor, as
:attr:`Profile.decayed` is. Each map
keeps ``profile.behaviour_keys`` keys: when it outgrows that by a quarter, the most recently
touched ones stay, in their order (:func:`trimmed`). The compiled step keeps the same lists in rows
(:mod:`liveprofile.engine.behaviour`).

This differs from :attr:`Profile.key_outcomes`, which counts the *labels* of a delayed task's
examples per key once their window closes: behaviour is what the user did, as it happens.

>>> from liveprofile.config import PipelineConfig, ProfileConfig
>>> from liveprofile.engine.core import Core
>>> from liveprofile.events import Event
>>> core = Core(PipelineConfig(profile=ProfileConfig(counters_half_life="1d")))
>>> state = core.new_state()
>>> _ = core.step(state, [
...     Event("e1", "u1", "view", 0.0, item_id="i1", category="tea"),
...     Event("e2", "u1", "purchase", 86400.0, item_id="i1", category="tea"),
... ])
>>> p, updater = state.profiles["u1"], core.updater
>>> unpack(p.behaviour_items["i1"])  # last, converted, view, click, cart, purchase (at anchor)
(86400.0, 1.0, 1.0, 0.0, 0.0, 2.0)
>>> updater.behaviour.view(p, 86400.0)["items"]["i1"]
{'last': 86400.0, 'converted': True, 'counts': {'view': 0.5, 'purchase': 1.0}}
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from liveprofile.config import ProfileConfig
from liveprofile.durations import DAY
from liveprofile.profile.decay import decay_factor

if TYPE_CHECKING:
    from liveprofile.profile.state import Profile

#: positions in a key's list: the last interaction's time, the converted flag, the first count
B_LAST, B_CONVERTED, B_COUNTS = 0, 1, 2
#: the two maps of a profile, as the features and the compiled rows name them
KINDS = ("item", "category")


def pack(values: Sequence[float]) -> bytes:
    """One key's floats as stored.

    >>> unpack(pack([5.0, 1.0, 0.25]))
    (5.0, 1.0, 0.25)
    """
    return struct.pack(f"<{len(values)}d", *values)


def unpack(entry: bytes) -> tuple[float, ...]:
    """One key's floats: last interaction, converted, then the counts."""
    return struct.unpack(f"<{len(entry) // 8}d", entry)


def last_touch(entry: bytes) -> float:
    """The event time of the last interaction with a key."""
    return float(struct.unpack_from("<d", entry)[0])


def mean_value(entry: Sequence[float], column: int) -> float:
    """A key's mean value per counted event: the value sum in ``column`` over the counts before
    it (both decayed alike, so their ratio needs no decay); 0.0 with no count.

    >>> mean_value((0.0, 0.0, 1.0, 3.0, 14.0), 4)
    3.5
    """
    total = 0.0
    for c in range(B_COUNTS, column):  # by index: the compiled step passes a row of an array
        total += entry[c]
    return entry[column] / total if total > 0.0 else 0.0


def trim_limit(room: int) -> int:
    """A bounded map of ``room`` keys (behaviour, key outcomes) is trimmed back to ``room``
    once it holds more keys than this: a quarter more, so trimming is rare.

    >>> trim_limit(8), trim_limit(3)
    (10, 3)
    """
    return room + room // 4


def trimmed(entries: dict[str, bytes], room: int) -> dict[str, bytes]:
    """The ``room`` most recently touched keys of ``entries`` (of keys touched at the same
    time, the earlier ones), in the order they had: the rest are dropped, nothing moves (so
    the compiled step trims a row without sorting it).

    >>> kept = trimmed({"a": pack([1.0, 0.0]), "b": pack([3.0, 0.0]), "c": pack([1.0, 1.0])}, 2)
    >>> {key: unpack(entry) for key, entry in kept.items()}
    {'a': (1.0, 0.0), 'b': (3.0, 0.0)}
    """
    keep = set(sorted(entries, key=lambda key: -last_touch(entries[key]))[:room])
    return {key: entry for key, entry in entries.items() if key in keep}


class BehaviourTracker:
    """Keeps the behaviour maps of profiles as a :class:`ProfileConfig` says."""

    def __init__(self, config: ProfileConfig, h_counters: float) -> None:
        self.types = tuple(config.behaviour_types)
        #: each counted type's position in a key's list
        self.column = {kind: B_COUNTS + j for j, kind in enumerate(self.types)}
        self.room = config.behaviour_keys
        #: a map is trimmed back to ``room`` past this many keys
        self.limit = trim_limit(self.room)
        #: the column of the decayed value sum (``profile.behaviour_value``), 0: none
        self.value = B_COUNTS + len(self.types) if config.behaviour_value else 0
        self.width = B_COUNTS + len(self.types) + (1 if self.value else 0)
        self._h = h_counters

    def rebase(self, p: Profile, factor: float) -> None:
        """Scale the stored counts when the profile's anchor moves (``factor``: of the
        counters)."""
        for entries in (p.behaviour_items, p.behaviour_categories):
            for key, entry in list(entries.items()):
                v = unpack(entry)
                entries[key] = pack([*v[:B_COUNTS], *(c * factor for c in v[B_COUNTS:])])

    def merge(self, into: Profile, other: Profile) -> None:
        """Fold ``other``'s maps into ``into``'s (both at the same anchor): counts add up, the
        last interaction is the later one, converted on either is converted."""
        for field in ("behaviour_items", "behaviour_categories"):
            entries: dict[str, bytes] = getattr(into, field)
            for key, their_entry in getattr(other, field).items():
                mine_entry = entries.get(key)
                if mine_entry is None:
                    entries[key] = their_entry
                    continue
                mine, theirs = list(unpack(mine_entry)), unpack(their_entry)
                mine[B_LAST] = max(mine[B_LAST], theirs[B_LAST])
                mine[B_CONVERTED] = max(mine[B_CONVERTED], theirs[B_CONVERTED])
                for j in range(B_COUNTS, min(len(mine), len(theirs))):
                    mine[j] += theirs[j]
                entries[key] = pack(mine)
            if len(entries) > self.limit:
                setattr(into, field, trimmed(entries, self.room))

    def readable(self, entry: Sequence[float], f: float) -> dict[str, Any]:
        """One key's behaviour (``entry`` unpacked), counts decayed by ``f``."""
        counts = {
            kind: round(c * f, 6)
            for kind, c in zip(self.types, entry[B_COUNTS:], strict=False)
            if c
        }
        out = {"last": entry[B_LAST], "converted": entry[B_CONVERTED] > 0, "counts": counts}
        if self.value and len(entry) > self.value:
            out["value"] = round(mean_value(entry, self.value), 6)
        return out

    def view(self, p: Profile, at: float) -> dict[str, dict[str, Any]]:
        """Both maps as of event time ``at``, most recently touched first."""
        f = decay_factor(at, p.anchor, self._h)
        return {
            "items": self._readable(p.behaviour_items.items(), f),
            "categories": self._readable(p.behaviour_categories.items(), f),
        }

    def _readable(
        self, entries: Iterable[tuple[str, bytes]], f: float
    ) -> dict[str, dict[str, Any]]:
        ordered = sorted(((key, unpack(e)) for key, e in entries), key=lambda kv: -kv[1][B_LAST])
        return {key: self.readable(entry, f) for key, entry in ordered}

    def fields(self, p: Profile, at: float, field: str) -> dict[str, dict[str, Any]]:
        """One map as rules read it: per key, the decayed count per type, ``converted`` and
        ``days_since`` (the last interaction)."""
        f = decay_factor(at, p.anchor, self._h)
        out: dict[str, dict[str, Any]] = {}
        for key, packed in getattr(p, field).items():
            entry = unpack(packed)
            values: dict[str, Any] = {
                kind: c * f
                for kind, c in zip(self.types, entry[B_COUNTS:])  # noqa: B905
            }
            if self.value and len(entry) > self.value:
                values["value"] = mean_value(entry, self.value)
            values["converted"] = entry[B_CONVERTED] > 0
            values["days_since"] = max(0.0, (at - entry[B_LAST]) / DAY)
            out[key] = values
        return out

"""Item records straight from the compiled path's arrays to their stored bytes.

The bytes are those of :func:`liveprofile.profile.items.encode_item` for the same
:class:`~liveprofile.profile.items.ItemStats`: the schema byte, then MessagePack as msgspec writes
it (floats as float64, integers in their smallest form, dict keys in insertion order), so a store
written by either engine reads the same.

>>> import numpy as np
>>> from liveprofile.profile.items import ItemStats, encode_item
>>> topics, tasks = StringTable(), StringTable()
>>> topics.extend(["dairy"])
>>> tasks.extend(["buy"])
>>> xf = np.array([[5.0, 7.0, 1.5, 0.0]])
>>> xi = np.array([[2, 0, 0, 1]])  # n, value_n, category code, exists
>>> counts = np.array([[1]]), np.array([[2]])  # positives, examples per task
>>> first = np.array([[[0], [1]]])  # when each count became non-zero
>>> blob = encode_items(np.array([0]), xf, xi, *counts, first, topics, tasks)[0]
>>> stats = ItemStats(5.0, 7.0, 2, 1.5, 0.0, 0, {"buy": 1}, {"buy": 2}, "dairy")
>>> blob == encode_item(stats)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
import numba
import numpy as np

from liveprofile.engine import kernel as K
from liveprofile.profile.items import ITEM_SCHEMA

# room per record beyond the task maps: header, 4 floats, 2 ints, the category
_FIXED = 1 + 1 + 4 * 9 + 2 * 9 + 1


class StringTable:
    """Strings as their MessagePack encodings, concatenated, for the compiled writers."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._bytes = np.zeros(0, np.uint8)
        self._starts = np.zeros(1, np.int64)
        self._stale = False

    def __len__(self) -> int:
        return len(self._parts)

    def extend(self, names: Iterable[str]) -> None:
        encode = msgspec.msgpack.encode
        self._parts.extend(encode(name) for name in names)
        self._stale = True

    def arrays(self) -> tuple[Any, Any]:
        if self._stale:
            self._bytes = np.frombuffer(b"".join(self._parts), np.uint8)
            self._starts = np.zeros(len(self._parts) + 1, np.int64)
            np.cumsum([len(p) for p in self._parts], out=self._starts[1:])
            self._stale = False
        return self._bytes, self._starts

    def longest(self) -> int:
        return max(map(len, self._parts), default=0)


def encode_items(
    rows: Any,
    xf: Any,
    xi: Any,
    xpos: Any,
    xex: Any,
    first: Any,
    topics: StringTable,
    tasks: StringTable,
) -> list[bytes]:
    """The stored bytes of item ``rows``; ``topics`` and ``tasks`` hold the names by code."""
    if not len(rows):
        return []
    room = _FIXED + topics.longest() + 2 * len(tasks) * (tasks.longest() + 9) + 6
    buf = np.empty(len(rows) * room, np.uint8)
    ends = np.empty(len(rows), np.int64)
    _encode_items(rows, xf, xi, xpos, xex, first, *topics.arrays(), *tasks.arrays(), buf, ends)
    blob = buf.tobytes()
    out = []
    start = 0
    for end in ends.tolist():
        out.append(blob[start:end])
        start = end
    return out


@numba.njit(cache=True, nogil=True)
def _float(buf, o, x, one):  # type: ignore[no-untyped-def]
    one[0] = x
    bits = one.view(np.uint64)[0]
    buf[o] = 0xCB
    for j in range(8):
        buf[o + 1 + j] = (bits >> np.uint64(56 - 8 * j)) & np.uint64(0xFF)
    return o + 9


@numba.njit(cache=True, nogil=True)
def _uint(buf, o, v):  # type: ignore[no-untyped-def]
    if v < 128:
        buf[o] = v
        return o + 1
    if v < 256:
        head, size = 0xCC, 1
    elif v < 65536:
        head, size = 0xCD, 2
    elif v < 4294967296:
        head, size = 0xCE, 4
    else:
        head, size = 0xCF, 8
    buf[o] = head
    for j in range(size):
        buf[o + 1 + j] = (v >> (8 * (size - 1 - j))) & 0xFF
    return o + 1 + size


@numba.njit(cache=True, nogil=True)
def _string(buf, o, data, starts, code):  # type: ignore[no-untyped-def]
    for j in range(starts[code], starts[code + 1]):
        buf[o] = data[j]
        o += 1
    return o


@numba.njit(cache=True, nogil=True)
def _count_map(buf, o, counts, first, r, kind, data, starts, order):  # type: ignore[no-untyped-def]
    """A task -> count map with the non-zero counts, keys in the order they became non-zero."""
    m = 0
    for t in range(counts.shape[1]):
        if counts[r, t] != 0:
            # insertion sort by the tick the count first became non-zero
            q = m
            while q > 0 and first[r, kind, order[q - 1]] > first[r, kind, t]:
                order[q] = order[q - 1]
                q -= 1
            order[q] = t
            m += 1
    if m < 16:
        buf[o] = 0x80 | m
        o += 1
    else:
        buf[o] = 0xDE
        buf[o + 1] = m >> 8
        buf[o + 2] = m & 0xFF
        o += 3
    for q in range(m):
        t = order[q]
        o = _string(buf, o, data, starts, t)
        o = _uint(buf, o, counts[r, t])
    return o


@numba.njit(cache=True, nogil=True)
def _encode_items(  # type: ignore[no-untyped-def]
    rows, xf, xi, xpos, xex, first, topic_data, topic_starts, task_data, task_starts, buf, ends
):
    one = np.empty(1, np.float64)
    order = np.empty(xpos.shape[1], np.int64)
    o = 0
    for j in range(rows.shape[0]):
        r = rows[j]
        buf[o] = ITEM_SCHEMA
        buf[o + 1] = 0x99  # an array of the 9 fields of ItemStats
        o += 2
        o = _float(buf, o, xf[r, K.I_ANCHOR], one)
        o = _float(buf, o, xf[r, K.I_LAST], one)
        o = _uint(buf, o, xi[r, K.I_N])
        o = _float(buf, o, xf[r, K.I_POP], one)
        o = _float(buf, o, xf[r, K.I_VSUM], one)
        o = _uint(buf, o, xi[r, K.I_VN])
        o = _count_map(buf, o, xpos, first, r, 1, task_data, task_starts, order)
        o = _count_map(buf, o, xex, first, r, 0, task_data, task_starts, order)
        if xi[r, K.I_CAT] < 0:
            buf[o] = 0xC0
            o += 1
        else:
            o = _string(buf, o, topic_data, topic_starts, xi[r, K.I_CAT])
        ends[j] = o

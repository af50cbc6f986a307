"""Item records straight from the compiled path's arrays to their stored bytes.

The bytes are those of :func:`liveprofile.profile.items.encode_item` for the same
:class:`~liveprofile.profile.items.ItemStats`: the schema byte, then MessagePack as msgspec writes
it (floats as float64, integers in their smallest form, dict keys in insertion order), so a store
written by either engine reads the same.

>>> import numpy as np
>>> from liveprofile.engine.records import Items
>>> from liveprofile.profile.items import ItemStats, encode_item
>>> topics, tasks = StringTable(), StringTable()
>>> topics.extend(["dairy"])
>>> tasks.extend(["buy"])
>>> items = Items(
...     xf=np.array([[5.0, 7.0, 1.5, 0.0]]),
...     xi=np.array([[2, 0, 0, 1]]),  # n, value_n, category code, exists
...     count=np.array([[[2], [1]]]),  # examples and positives (layout.COUNTS) per task
...     first=np.array([[[0], [1]]]),  # when each count became non-zero
...     touched=np.ones(1, np.bool_))
>>> blob = encode_items(np.array([0]), items, topics, tasks)[0]
>>> stats = ItemStats(5.0, 7.0, 2, 1.5, 0.0, 0, {"buy": 1}, {"buy": 2}, "dairy")
>>> blob == encode_item(stats)
True
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec
import numba
import numpy as np

from liveprofile.engine.layout import COUNTS, I_CAT, ITEM_FLOATS, ITEM_INTS
from liveprofile.engine.records import Items
from liveprofile.errors import LiveprofileError
from liveprofile.profile.items import ITEM_SCHEMA, ItemStats

# how a field is written: a float column, an int column, a task -> count map, a name or nil
_FLOAT, _UINT, _COUNTS, _NAME = 0, 1, 2, 3
_ANNOTATION = {_FLOAT: "float", _UINT: "int", _COUNTS: "dict[str, int]", _NAME: "str | None"}


def item_fields(struct: type[ItemStats] = ItemStats) -> Any:
    """How each field of :class:`ItemStats`, in order, is written: (how, column) rows.

    An ItemStats field without a column in the compiled layout, or of a type this writer does
    not know, stops the import: the two engines would otherwise write different records.

    >>> class Wider(ItemStats):
    ...     clicks: int = 0
    >>> item_fields(Wider)
    Traceback (most recent call last):
    ...
    liveprofile.errors.LiveprofileError: ItemStats.clicks has no writer in \
liveprofile.engine.packing: give it a column in liveprofile.engine.layout and a case in item_fields
    """
    rows = []
    for name in struct.__struct_fields__:
        if name in ITEM_FLOATS:
            how, col = _FLOAT, ITEM_FLOATS.index(name)
        elif name == "category":
            how, col = _NAME, I_CAT
        elif name in ITEM_INTS:
            how, col = _UINT, ITEM_INTS.index(name)
        elif name in COUNTS:
            how, col = _COUNTS, COUNTS.index(name)
        else:
            how, col = -1, -1
        declared = (inspect.get_annotations(c) for c in struct.__mro__)
        annotation = next((d[name] for d in declared if name in d), None)
        if how < 0 or annotation != _ANNOTATION[how]:
            raise LiveprofileError(
                f"ItemStats.{name} has no writer in liveprofile.engine.packing: give it a column "
                "in liveprofile.engine.layout and a case in item_fields"
            )
        rows.append((how, col))
    if len(rows) > 15:
        raise LiveprofileError("ItemStats outgrew a MessagePack fixarray (15 fields)")
    return np.array(rows, np.int64)


_FIELDS = item_fields()
#: room per record beyond the task maps and the name: header, then at most 9 bytes a field
_FIXED = 2 + 9 * len(_FIELDS)


class Strings(NamedTuple):
    """Strings by code as the compiled writers take them: string ``c``'s MessagePack encoding
    is ``data[starts[c]:starts[c + 1]]``."""

    data: Any
    starts: Any


class StringTable:
    """Strings as their MessagePack encodings, concatenated, for the compiled writers."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._bytes = np.zeros(0, np.uint8)
        self._starts = np.zeros(1, np.int64)
        self._longest = 0

    def __len__(self) -> int:
        return len(self._parts)

    def extend(self, names: Iterable[str]) -> None:
        encode = msgspec.msgpack.encode
        self._parts.extend(encode(name) for name in names)

    def arrays(self) -> Strings:
        """The encodings, concatenated, and where each starts (one more: the end). Only the
        strings added since the last call are joined."""
        have = len(self._starts) - 1
        if have < len(self._parts):
            new = self._parts[have:]
            lengths = np.fromiter(map(len, new), np.int64, len(new))
            self._longest = max(self._longest, int(lengths.max()))
            joined = np.frombuffer(b"".join(new), np.uint8)
            self._bytes = np.concatenate([self._bytes, joined])
            self._starts = np.concatenate([self._starts, self._starts[-1] + np.cumsum(lengths)])
        return Strings(self._bytes, self._starts)

    def longest(self) -> int:
        """The length of the longest encoding."""
        self.arrays()
        return self._longest


def encode_items(rows: Any, items: Items, topics: StringTable, tasks: StringTable) -> list[bytes]:
    """The stored bytes of item ``rows`` of ``items``; ``topics`` and ``tasks`` hold the names
    by code."""
    if not len(rows):
        return []
    room = _FIXED + topics.longest() + 2 * len(tasks) * (tasks.longest() + 9) + 6
    buf = np.empty(len(rows) * room, np.uint8)
    ends = np.empty(len(rows), np.int64)
    _encode_items(rows, items, _FIELDS, topics.arrays(), tasks.arrays(), buf, ends)
    cut = ends.tolist()
    blob = buf[: cut[-1]].tobytes()  # the records written, not the scratch room after them
    return [blob[a:b] for a, b in zip([0, *cut[:-1]], cut, strict=True)]


@numba.njit(cache=True, nogil=True)
def _float(buf, o, x, one):  # type: ignore[no-untyped-def]
    one[0] = x
    bits = one.view(np.uint64)[0]
    buf[o] = 0xCB
    for j in range(8):
        buf[o + 1 + j] = (bits >> np.uint64(56 - 8 * j)) & np.uint64(0xFF)
    return o + 9


@numba.njit(cache=True, nogil=True)
def _big_endian(buf, o, head, size, v):  # type: ignore[no-untyped-def]
    """``head``, then the ``size`` low bytes of ``v``, most significant first."""
    buf[o] = head
    for j in range(size):
        buf[o + 1 + j] = (v >> (8 * (size - 1 - j))) & 0xFF
    return o + 1 + size


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
    return _big_endian(buf, o, head, size, v)


@numba.njit(cache=True, nogil=True)
def _int(buf, o, v):  # type: ignore[no-untyped-def]
    if v >= 0:
        return _uint(buf, o, v)
    if v >= -32:  # negative fixint; then the smallest of int8 ... int64, as msgspec writes
        buf[o] = v & 0xFF
        return o + 1
    if v >= -128:
        head, size = 0xD0, 1
    elif v >= -32768:
        head, size = 0xD1, 2
    elif v >= -2147483648:
        head, size = 0xD2, 4
    else:
        head, size = 0xD3, 8
    return _big_endian(buf, o, head, size, v)


@numba.njit(cache=True, nogil=True)
def _header(buf, o, m, small, big):  # type: ignore[no-untyped-def]
    """A map or array header for ``m`` entries (``small``: the fix form, ``big``: 32-bit, one
    above the 16-bit form), in the smallest form, as msgspec writes it."""
    if m < 16:
        buf[o] = small | m
        return o + 1
    if m < 65536:
        buf[o] = big - 1
        buf[o + 1] = m >> 8
        buf[o + 2] = m & 0xFF
        return o + 3
    buf[o] = big
    for j in range(4):
        buf[o + 1 + j] = (m >> (24 - 8 * j)) & 0xFF
    return o + 5


@numba.njit(cache=True, nogil=True)
def _string(buf, o, names, code):  # type: ignore[no-untyped-def]
    """String ``code`` of ``names`` (:class:`Strings`)."""
    data = names.data
    for j in range(names.starts[code], names.starts[code + 1]):
        buf[o] = data[j]
        o += 1
    return o


@numba.njit(cache=True, nogil=True)
def _count_map(buf, o, counts, first, r, kind, names, order):  # type: ignore[no-untyped-def]
    """A task -> count map with the non-zero counts of ``counts[r, kind]``, keys in the order
    they became non-zero."""
    m = 0
    for t in range(counts.shape[2]):
        if counts[r, kind, t] != 0:
            # insertion sort by the tick the count first became non-zero
            q = m
            while q > 0 and first[r, kind, order[q - 1]] > first[r, kind, t]:
                order[q] = order[q - 1]
                q -= 1
            order[q] = t
            m += 1
    o = _header(buf, o, m, 0x80, 0xDF)
    for q in range(m):
        t = order[q]
        o = _string(buf, o, names, t)
        o = _uint(buf, o, counts[r, kind, t])
    return o


@numba.njit(cache=True, nogil=True)
def _encode_items(rows, items, fields, topics, tasks, buf, ends):  # type: ignore[no-untyped-def]
    """Rows ``rows`` of ``items`` (:class:`~liveprofile.engine.records.Items`) into ``buf``,
    written as ``fields`` (:func:`item_fields`) says; ``ends[j]``: where row ``j`` ends."""
    xf, xi, counts, first = items.xf, items.xi, items.count, items.first
    one = np.empty(1, np.float64)
    order = np.empty(counts.shape[2], np.int64)
    o = 0
    for j in range(rows.shape[0]):
        r = rows[j]
        buf[o] = ITEM_SCHEMA
        buf[o + 1] = 0x90 | fields.shape[0]  # an array of the fields of ItemStats
        o += 2
        for f in range(fields.shape[0]):
            how, col = fields[f, 0], fields[f, 1]
            if how == _FLOAT:
                o = _float(buf, o, xf[r, col], one)
            elif how == _UINT:
                o = _uint(buf, o, xi[r, col])
            elif how == _COUNTS:
                o = _count_map(buf, o, counts, first, r, col, tasks, order)
            elif xi[r, col] < 0:
                buf[o] = 0xC0
                o += 1
            else:
                o = _string(buf, o, topics, xi[r, col])
        ends[j] = o

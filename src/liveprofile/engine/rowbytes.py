"""The map and list fields of profile rows, written as MessagePack and read back by msgspec.

Building a profile's dicts and lists from its :class:`~liveprofile.engine.records.Users` row in
Python costs tens of microseconds a user (a dict entry and a float or int object at a time).
:func:`row_fields` writes the fields of the touched rows that the kernel owns (``counts``,
``decayed``, ``interests``, ``key_outcomes``, ``spend``, ``recent``, the behaviour maps) as one
MessagePack array in compiled code, and msgspec decodes it into the values
:func:`.rowio.store_users` assigns: the objects are then made by msgspec's C decoder, typed by
the :class:`~liveprofile.profile.state.Profile` fields themselves. Keys keep the rows' insertion
order, and a recent event's time is written as an int when it is whole (as
:func:`liveprofile.profile.risk.stamp` stores it).

>>> import numpy as np
>>> from liveprofile.engine.records import Users
>>> U = Users.empty(1, types=2, tasks=1, top_k=2, room=2, recent=2)
>>> U.tord[0, :2], U.tlen[0], U.cnt[0], U.dec[0] = [1, 0], 2, [3, 1], [0.5, 2.0]
>>> U.rts[0, 0], U.rty[0, 0], U.rit[0, 0], U.rva[0, 0], U.rlen[0] = 7.0, 1, -1, np.nan, 1
>>> kinds, topics, items = Names().sync(["view", "buy"]), Names(), Names()
>>> x = row_fields(U, np.array([0]), kinds, topics, items)[0]
>>> x.counts, x.decayed, x.recent
({'buy': 1, 'view': 3}, {'buy': 2.0, 'view': 0.5}, [(7, 'buy', None, None)])
"""

from __future__ import annotations

from typing import Any

import msgspec
import numba
import numpy as np

from liveprofile.engine.packing import StringTable, _float, _header, _int, _string
from liveprofile.engine.records import Users
from liveprofile.profile.state import Profile

#: the Profile fields written here, in the order they are written
FIELDS = (
    "counts",
    "decayed",
    "interests",
    "key_outcomes",
    "spend",
    "recent",
    "behaviour_items",
    "behaviour_categories",
)
_types = {f.name: f.type for f in msgspec.structs.fields(Profile)}
#: the fields of one row, typed as Profile declares them
RowFields = msgspec.defstruct(
    "RowFields", [(name, _types[name]) for name in FIELDS], array_like=True, gc=False
)
_decoder = msgspec.msgpack.Decoder(list[RowFields])  # type: ignore[valid-type]


class Names:
    """A :class:`StringTable` kept up to date with a growing list of names (codes never
    change)."""

    def __init__(self) -> None:
        self.table = StringTable()

    def sync(self, names: list[str]) -> Names:
        have = len(self.table)
        if have < len(names):
            self.table.extend(names[have:])
        return self


def row_fields(U: Users, rows: Any, kinds: Names, topics: Names, items: Names) -> list[Any]:
    """The :data:`FIELDS` of ``rows`` of ``U``, one :data:`RowFields` a row; ``kinds``,
    ``topics`` and ``items`` hold the names of the event types, topics and items by code."""
    return row_fields_bytes(U, rows, kinds, topics, items)[0]


def row_fields_bytes(
    U: Users, rows: Any, kinds: Names, topics: Names, items: Names
) -> tuple[list[Any], bytes, Any]:
    """:func:`row_fields`, with the MessagePack they were decoded from and where each field
    of each row starts in it (``offsets[j, k]``, field ``k`` of :data:`FIELDS`; ``offsets[j,
    8]``: the end of row ``j``). The bytes are what msgspec writes for the decoded values
    (smallest headers and integers), so a field's slice can stand for the field in a profile's
    row (:mod:`liveprofile.engine.profilerows`)."""
    blob, offsets = row_bytes(U, rows, kinds, topics, items)
    return (_decoder.decode(blob) if len(rows) else []), blob, offsets


def row_bytes(U: Users, rows: Any, kinds: Names, topics: Names, items: Names) -> tuple[bytes, Any]:
    """The MessagePack :func:`row_fields_bytes` decodes, and its offsets, without decoding it:
    row ``j`` is the MessagePack array of :data:`FIELDS` from ``offsets[j, 0] - 1`` to
    ``offsets[j, 8]``."""
    n = len(rows)
    if not n:
        return b"", np.zeros((0, len(FIELDS) + 1), np.int64)
    lk, lt, li = kinds.table.longest(), topics.table.longest(), items.table.longest()
    per_row = (
        1
        + 2 * (3 + U.tord.shape[1] * (lk + 9))
        + 3
        + U.ik.shape[1] * (lt + 9)
        + 3
        + U.okey.shape[1] * 18
        + 3
        + U.sday.shape[1] * 18
        + 3
        + U.rts.shape[1] * (20 + lk + li)
        + 2 * (5 + U.bkey.shape[2] * (max(lt, li) + 3 + 8 * U.bval.shape[3]))
    )
    buf = np.empty(5 + n * per_row, np.uint8)
    offsets = np.empty((n, len(FIELDS) + 1), np.int64)
    tables = kinds.table.arrays(), topics.table.arrays(), items.table.arrays()
    # the behaviour lists' floats as their little-endian bytes (``profile.behaviour.pack``)
    floats = U.bval.astype("<f8", copy=False).view(np.uint8)
    end = _write(rows, U, *tables, floats, buf, offsets)
    return buf[:end].tobytes(), offsets


@numba.njit(cache=True, nogil=True)
def _bin(buf, o, data):  # type: ignore[no-untyped-def]
    """``data`` (bytes) as MessagePack bin: a key's floats as ``profile.behaviour.pack``
    writes them, given their little-endian bytes."""
    n = data.shape[0]
    if n < 256:
        buf[o] = 0xC4
        buf[o + 1] = n
        o += 2
    else:
        buf[o] = 0xC5
        buf[o + 1] = n >> 8
        buf[o + 2] = n & 0xFF
        o += 3
    buf[o : o + n] = data
    return o + n


@numba.njit(cache=True, nogil=True)
def _write(rows, U, kinds, topics, items, floats, buf, offs):  # type: ignore[no-untyped-def]
    """Rows as MessagePack into ``buf``; ``offs[j, k]``: where field ``k`` of row ``j`` starts
    (``offs[j, 8]``: where the row ends). ``floats``: ``U.bval``'s little-endian bytes."""
    one = np.empty(1, np.float64)
    o = _header(buf, 0, rows.shape[0], 0x90, 0xDD)
    for j in range(rows.shape[0]):
        r = rows[j]
        buf[o] = 0x90 | 8
        o += 1
        offs[j, 0] = o
        m = U.tlen[r]
        o = _header(buf, o, m, 0x80, 0xDF)
        for q in range(m):
            c = U.tord[r, q]
            o = _string(buf, o, kinds, c)
            o = _int(buf, o, U.cnt[r, c])
        offs[j, 1] = o
        o = _header(buf, o, m, 0x80, 0xDF)
        for q in range(m):
            c = U.tord[r, q]
            o = _string(buf, o, kinds, c)
            o = _float(buf, o, U.dec[r, c], one)
        offs[j, 2] = o
        m = U.il[r]
        o = _header(buf, o, m, 0x80, 0xDF)
        for q in range(m):
            o = _string(buf, o, topics, U.ik[r, q])
            o = _float(buf, o, U.iv[r, q], one)
        offs[j, 3] = o
        m = U.olen[r]
        o = _header(buf, o, m, 0x80, 0xDF)
        for q in range(m):
            o = _int(buf, o, U.okey[r, q])
            o = _int(buf, o, U.oval[r, q])
        offs[j, 4] = o
        m = U.slen[r]
        o = _header(buf, o, m, 0x80, 0xDF)
        for q in range(m):
            o = _int(buf, o, U.sday[r, q])
            o = _int(buf, o, U.scents[r, q])
        offs[j, 5] = o
        m = U.rlen[r]
        o = _header(buf, o, m, 0x90, 0xDD)
        for q in range(m):
            buf[o] = 0x94
            o += 1
            t = U.rts[r, q]
            if np.isfinite(t) and t == np.floor(t) and abs(t) < 9.2e18:
                o = _int(buf, o, np.int64(t))
            else:
                o = _float(buf, o, t, one)
            o = _string(buf, o, kinds, U.rty[r, q])
            if U.rit[r, q] < 0:
                buf[o] = 0xC0
                o += 1
            else:
                o = _string(buf, o, items, U.rit[r, q])
            v = U.rva[r, q]
            if np.isnan(v):
                buf[o] = 0xC0
                o += 1
            else:
                o = _float(buf, o, v, one)
        for k in range(2):  # behaviour: items, then categories
            names = items if k == 0 else topics
            offs[j, 6 + k] = o
            m = U.blen[r, k]
            o = _header(buf, o, m, 0x80, 0xDF)
            for q in range(m):
                o = _string(buf, o, names, U.bkey[r, k, q])
                o = _bin(buf, o, floats[r, k, q])
        offs[j, 8] = o
    return o

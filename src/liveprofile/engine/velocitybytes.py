"""Profiles' velocity lists as MessagePack, read and written in compiled code.

The compiled step counts a batch's events into the velocity lists of its users
(:mod:`.velocity`). Laying each user's three lists (``v_events``, ``v_purchases``, ``v_items``)
out as arrays and building them back as Python lists of tuples cost more than the counting
itself. Here the lists go in and out as the MessagePack a profile's row holds for them (what
msgspec writes: times as :func:`~liveprofile.profile.risk.stamp` stores them, integers in their
smallest form): :func:`read_lists` parses a run of rows, one ``[v_events, v_purchases, v_items]``
array a user, into the arrays :func:`.velocity._run` counts on, and :func:`write_lists` writes
them back, so a profile can hold its lists as those bytes until something reads them
(:meth:`liveprofile.engine.lazyprofiles.ProfileMap.hold_velocity`).

>>> p_lists = ([(60, 2), (61.5, 1)], [], [(60, [7, 9])])
>>> blob = encode_lists(p_lists)
>>> times, values, lens = read_lists(blob, np.array([0]), cap=4)
>>> lens.tolist(), times[2, 0, :2].tolist(), values[2, 0, :2].tolist()
([[2, 0, 2]], [60.0, 60.0], [7, 9])
>>> out, offsets = write_lists(times, values, lens)
>>> out[offsets[0, 0] - 1 : offsets[0, 3]] == blob, decode_lists(out) == [p_lists]
(True, True)
"""

from __future__ import annotations

from typing import Any

import msgspec
import numba
import numpy as np

from liveprofile.engine.packing import _float, _header, _int
from liveprofile.profile.risk import Counts, ItemGroups

#: the Profile fields held here, in the order they are written
FIELDS = ("v_events", "v_purchases", "v_items")
Lists = tuple[Counts, Counts, ItemGroups]
_encoder = msgspec.msgpack.Encoder()
_one = msgspec.msgpack.Decoder(Lists)
_many = msgspec.msgpack.Decoder(list[Lists])


def encode_lists(lists: Lists) -> bytes:
    """The MessagePack array of a profile's three velocity lists (what msgspec writes)."""
    return _encoder.encode(lists)


def decode_lists(blob: bytes) -> list[Lists]:
    """The lists of each user of a :func:`write_lists` blob."""
    return _many.decode(blob)


def decode_one(row: bytes) -> Lists:
    """The lists of one user's array (a row of :func:`write_lists`, or :func:`encode_lists`)."""
    return _one.decode(row)


def read_lists(blob: bytes, starts: Any, cap: int) -> tuple[Any, Any, Any]:
    """The lists of the users whose arrays start at ``starts`` in ``blob``, as the arrays of
    :func:`liveprofile.engine.velocity.count_lists`: ``times[k, j]`` and ``values[k, j]``
    (kind ``k``: events, purchases, items as (time, item) pairs) with ``lens[j, k]`` entries,
    and room for one more than ``cap`` or than the longest list."""
    buf = np.frombuffer(blob, np.uint8)
    starts = np.asarray(starts, np.int64)
    lens = np.zeros((len(starts), 3), np.int64)
    _read(buf, starts, np.zeros((3, 0, 0)), np.zeros((3, 0, 0), np.int64), lens, False)
    width = max(cap, int(lens.max(initial=0))) + 1
    times = np.zeros((3, len(starts), width))
    values = np.zeros((3, len(starts), width), np.int64)
    _read(buf, starts, times, values, lens, True)
    return times, values, lens


def write_lists(times: Any, values: Any, lens: Any) -> tuple[bytes, Any]:
    """The arrays back as MessagePack: an array of the users' ``[v_events, v_purchases,
    v_items]`` arrays; ``offsets[j, k]``: where field ``k`` of user ``j`` starts
    (``offsets[j, 3]``: where it ends; its array's header is the byte before field 0)."""
    n = lens.shape[0]
    entries = int(lens.sum())
    buf = np.empty(5 + n * 16 + entries * 34, np.uint8)
    offsets = np.empty((n, 4), np.int64)
    end = _write(times, values, lens, buf, offsets)
    return buf[:end].tobytes(), offsets


@numba.njit(cache=True, nogil=True)
def _length(buf, o):  # type: ignore[no-untyped-def]
    """The length of the array whose header is at ``o``, and where its entries start."""
    b = buf[o]
    if b & 0xF0 == 0x90:
        return np.int64(b & 0x0F), o + 1
    if b == 0xDC:
        return (np.int64(buf[o + 1]) << 8) | buf[o + 2], o + 3
    if b == 0xDD:
        m = np.int64(0)
        for j in range(4):
            m = (m << 8) | buf[o + 1 + j]
        return m, o + 5
    raise ValueError("velocity lists: an array was expected")


@numba.njit(cache=True, nogil=True)
def _number(buf, o):  # type: ignore[no-untyped-def]
    """The integer or float64 at ``o`` (as an int64 and a float64), and what follows it."""
    b = np.int64(buf[o])
    if b < 0x80:
        return b, np.float64(b), o + 1
    if b >= 0xE0:
        return b - 256, np.float64(b - 256), o + 1
    if b == 0xCB:
        bits = np.uint64(0)
        for j in range(8):
            bits = (bits << np.uint64(8)) | np.uint64(buf[o + 1 + j])
        x = np.empty(1, np.uint64)
        x[0] = bits
        f = x.view(np.float64)[0]
        return np.int64(0), f, o + 9
    if 0xCC <= b <= 0xCF:
        size = 1 << (b - 0xCC)
        v = np.uint64(0)
        for j in range(size):
            v = (v << np.uint64(8)) | np.uint64(buf[o + 1 + j])
        return np.int64(v), np.float64(v), o + 1 + size
    if 0xD0 <= b <= 0xD3:
        size = 1 << (b - 0xD0)
        s = np.int64(0)
        for j in range(size):
            s = (s << 8) | buf[o + 1 + j]
        shift = 64 - 8 * size
        s = (s << shift) >> shift  # sign-extended
        return s, np.float64(s), o + 1 + size
    raise ValueError("velocity lists: a number was expected")


@numba.njit(cache=True, nogil=True)
def _read(buf, starts, times, values, lens, fill):  # type: ignore[no-untyped-def]
    """Each user's lists into ``times``/``values`` (only their lengths into ``lens`` unless
    ``fill``)."""
    for j in range(starts.shape[0]):
        three, o = _length(buf, starts[j])
        if three != 3:
            raise ValueError("velocity lists: three lists were expected")
        for k in range(2):
            m, o = _length(buf, o)
            for q in range(m):
                _, o = _length(buf, o)  # a (time, count) pair
                _, t, o = _number(buf, o)
                c, _, o = _number(buf, o)
                if fill:
                    times[k, j, q] = t
                    values[k, j, q] = c
            lens[j, k] = m
        groups, o = _length(buf, o)
        n = 0
        for _g in range(groups):
            _, o = _length(buf, o)  # a (time, items) pair
            _, t, o = _number(buf, o)
            m, o = _length(buf, o)
            for _q in range(m):
                item, _, o = _number(buf, o)
                if fill:
                    times[2, j, n] = t
                    values[2, j, n] = item
                n += 1
        lens[j, 2] = n


@numba.njit(cache=True, nogil=True)
def _stamp(buf, o, t, one):  # type: ignore[no-untyped-def]
    """An event time as :func:`~liveprofile.profile.risk.stamp` stores it (as ``rowbytes``
    writes the recent events' times)."""
    if np.isfinite(t) and t == np.floor(t) and abs(t) < 9.2e18:
        return _int(buf, o, np.int64(t))
    return _float(buf, o, t, one)


@numba.njit(cache=True, nogil=True)
def _write(times, values, lens, buf, offs):  # type: ignore[no-untyped-def]
    one = np.empty(1, np.float64)
    o = _header(buf, 0, lens.shape[0], 0x90, 0xDD)
    for j in range(lens.shape[0]):
        buf[o] = 0x93
        o += 1
        for k in range(2):
            offs[j, k] = o
            m = lens[j, k]
            o = _header(buf, o, m, 0x90, 0xDD)
            for q in range(m):
                buf[o] = 0x92
                o = _stamp(buf, o + 1, times[k, j, q], one)
                o = _int(buf, o, values[k, j, q])
        offs[j, 2] = o
        m = lens[j, 2]
        groups = 0
        for q in range(m):
            if q == 0 or times[2, j, q] != times[2, j, q - 1]:
                groups += 1
        o = _header(buf, o, groups, 0x90, 0xDD)
        q = 0
        while q < m:
            t = times[2, j, q]
            e = q + 1
            while e < m and times[2, j, e] == t:
                e += 1
            buf[o] = 0x92
            o = _stamp(buf, o + 1, t, one)
            o = _header(buf, o, e - q, 0x90, 0xDD)
            for s in range(q, e):
                o = _int(buf, o, values[2, j, s])
            q = e
        offs[j, 3] = o
    return o

"""The ``examples`` and ``positives`` maps of touched profiles, written in compiled code.

Writing a touched row back used to rebuild these two dicts in Python, a task at a time
(:func:`.rowio._counted`). Their values are the row's counts (``Users.count``), but their key
order is history: a dict is only ever updated in place, so its keys are the old dict's keys
where they were, then the tasks whose count first became non-zero in the batch, in the order
they did (``Users.first``, the tick of that event; equal ticks by name). Which task got its
first example first, before this batch, and what a merge made of two profiles' dicts, are not
in the row. So the old order comes in as a code per dict: :class:`KeyOrders` numbers each
distinct sequence of keys once (the dicts of a pipeline's profiles come in a handful of
orders), and :func:`count_maps` writes every touched row's two maps in one compiled pass, as
MessagePack that msgspec decodes into the dicts (made by its C decoder). A dict with a key
that is not one of the tasks gets code -1: that row is left to :func:`.rowio._counted`.

>>> import numpy as np
>>> from liveprofile.engine.records import Users
>>> U = Users.empty(1, types=1, tasks=3, top_k=1, room=1, recent=1)
>>> U.count[0, 0] = [2, 0, 1]  # examples of tasks a, b, c
>>> U.count[0, 1] = [0, 0, 1]  # positives
>>> U.first[0, 0, 0] = 5  # a's first example came at tick 5 of this batch
>>> orders = KeyOrders(["a", "b", "c"])
>>> codes = np.array([[orders.code({"c": 1}), orders.code({})]])
>>> maps = count_maps(U, np.array([0]), codes, orders)[0]
>>> maps.examples, maps.positives
({'c': 1, 'a': 2}, {'c': 1})
>>> orders.code({"gone": 1})  # a task no longer configured
-1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import msgspec
import numba
import numpy as np

from liveprofile.engine.layout import COUNTS
from liveprofile.engine.packing import Strings, StringTable, _header, _int, _string
from liveprofile.engine.records import Users

#: the two maps of one row, in the order of ``layout.COUNTS`` (that of ``Users.count``)
CountMaps = msgspec.defstruct(
    "CountMaps", [(name, dict[str, int]) for name in COUNTS], array_like=True, gc=False
)
_decoder = msgspec.msgpack.Decoder(list[CountMaps])  # type: ignore[valid-type]


class Orders(NamedTuple):
    """:class:`KeyOrders` as the compiled writer takes them."""

    at: Any  # at[code, t]: where task t is among the keys of code (-1: not there)
    keys: Any  # keys[code, q]: the task of key q of code
    lengths: Any  # lengths[code]: how many keys
    by_name: Any  # each task's place among the names sorted
    names: Strings  # the task names


class KeyOrders:
    """The key sequences of count dicts seen so far, by code (see the module's doc)."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._task = {name: t for t, name in enumerate(self.names)}
        self._codes: dict[tuple[str, ...], int] = {(): 0}
        #: ``at[code, t]``: where task ``t`` is among the keys of ``code`` (-1: not there)
        self.at = np.full((1, len(self.names)), -1, np.int64)
        #: ``keys[code, q]``: the task of key ``q`` of ``code``; ``lengths[code]``: how many
        self.keys = np.full((1, len(self.names)), -1, np.int64)
        self.lengths = np.zeros(1, np.int64)
        self.table = StringTable()
        self.table.extend(self.names)
        # each task's place among the names sorted, which orders keys first counted together
        self.by_name = np.argsort(np.argsort(np.array(self.names, dtype=object))).astype(np.int64)

    def code(self, d: Mapping[str, Any]) -> int:
        """The code of ``d``'s keys, in their order (-1: a key that is not a task)."""
        keys = tuple(d)
        c = self._codes.get(keys)
        if c is None:
            c = self._codes[keys] = self._add(keys)
        return c

    def record(self) -> Orders:
        """The orders as :func:`_write` reads them."""
        return Orders(self.at, self.keys, self.lengths, self.by_name, self.table.arrays())

    def _add(self, keys: tuple[str, ...]) -> int:
        if any(k not in self._task for k in keys):
            return -1
        c = len(self.lengths)
        at = np.full(len(self.names), -1, np.int64)
        row = np.full(len(self.names), -1, np.int64)
        for q, k in enumerate(keys):
            at[self._task[k]] = q
            row[q] = self._task[k]
        self.at = np.vstack([self.at, at])
        self.keys = np.vstack([self.keys, row])
        self.lengths = np.append(self.lengths, len(keys))
        return c


def count_maps(U: Users, rows: Any, codes: Any, orders: KeyOrders) -> list[Any]:
    """The ``examples`` and ``positives`` of ``rows`` of ``U`` as dicts, one :data:`CountMaps`
    a row; ``codes[j]``: the codes (:meth:`KeyOrders.code`, not -1) of the dicts row ``j``
    had before the batch, in the order of ``layout.COUNTS``."""
    n = len(rows)
    if not n:
        return []
    tasks = len(orders.names)
    per_row = 1 + len(COUNTS) * (3 + tasks * (orders.table.longest() + 9))
    buf = np.empty(5 + n * per_row, np.uint8)
    end = _write(rows, U.count, U.first, codes, orders.record(), buf)
    return _decoder.decode(buf[:end].tobytes())


@numba.njit(cache=True, nogil=True)
def _write(rows, count, first, codes, orders, buf):  # type: ignore[no-untyped-def]
    """Each row's maps as a MessagePack array of them into ``buf`` (``count`` and ``first``:
    those of :class:`~liveprofile.engine.records.Users`, ``orders``: :class:`Orders`); returns
    the end."""
    at, keys, lengths, by_name, names = (
        orders.at, orders.keys, orders.lengths, orders.by_name, orders.names,
    )  # fmt: skip
    fresh = np.empty(count.shape[2], np.int64)
    o = _header(buf, 0, rows.shape[0], 0x90, 0xDD)
    for j in range(rows.shape[0]):
        r = rows[j]
        buf[o] = 0x90 | count.shape[1]
        o += 1
        for c in range(count.shape[1]):
            code = codes[j, c]
            # the tasks new to the map, by the tick their count became non-zero, then by name
            m = 0
            for t in range(count.shape[2]):
                if count[r, c, t] != 0 and at[code, t] < 0:
                    tick, name = first[r, c, t], by_name[t]
                    q = m
                    while q > 0 and (
                        first[r, c, fresh[q - 1]] > tick
                        or (first[r, c, fresh[q - 1]] == tick and by_name[fresh[q - 1]] > name)
                    ):
                        fresh[q] = fresh[q - 1]
                        q -= 1
                    fresh[q] = t
                    m += 1
            old = lengths[code]
            o = _header(buf, o, old + m, 0x80, 0xDF)
            for q in range(old):  # the old keys where they were, with their counts now
                t = keys[code, q]
                o = _string(buf, o, names, t)
                o = _int(buf, o, count[r, c, t])
            for q in range(m):
                t = fresh[q]
                o = _string(buf, o, names, t)
                o = _int(buf, o, count[r, c, t])
    return o

"""The open pending examples of the compiled step, in a pool of slots with a heap per task (and a
second one per task for the examples of ``feedback = "wait"`` whose wait has not ended).

:class:`PendingPool` owns the arrays of a :class:`~liveprofile.engine.records.Pool`: it makes
room, takes over :class:`~liveprofile.learn.tasks.Pending` objects and hands them back, and writes
the pending log of a batch as :class:`~liveprofile.learn.tasks.PendingColumns`.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from numba import types as nbtypes
from numba.typed import Dict as TypedDict

from liveprofile.engine.codes import CodeTables, grow
from liveprofile.engine.layout import KEYSPACE
from liveprofile.engine.records import Pool
from liveprofile.engine.rowops import push_all
from liveprofile.learn.tasks import Pending, PendingColumns, split_ones

I64 = npt.NDArray[np.int64]


def _empty(cap: int, width: int, tasks: int) -> Pool:
    return Pool(
        task=np.zeros(cap, np.int64),
        user=np.zeros(cap, np.int64),
        key=np.zeros(cap, np.int64),
        item=np.zeros(cap, np.int64),
        open_ts=np.zeros(cap, np.float64),
        deadline=np.zeros(cap, np.float64),
        conv=np.zeros(cap, np.bool_),
        flen=np.zeros(cap, np.int64),
        fidx=np.zeros((cap, width), np.int64),
        fval=np.zeros((cap, width), np.float64),
        free=np.arange(cap - 1, -1, -1, dtype=np.int64),
        nfree=np.array([cap], np.int64),
        heap=np.zeros((2 * tasks, cap), np.int64),
        hlen=np.zeros(2 * tasks, np.int64),
        waiting=TypedDict.empty(key_type=nbtypes.int64, value_type=nbtypes.int64),
        link=np.full(cap, -1, np.int64),
        total=np.zeros(cap, np.float64),
    )


class PendingPool:
    """The pending examples of the delayed tasks, as arrays; see the module's docstring."""

    def __init__(self, tables: CodeTables) -> None:
        self.tables = tables
        self.n_tasks = len(tables.task_names)
        self.arrays = _empty(64, 64, self.n_tasks)
        #: the prediction made when each example opened (the kernel does not read it)
        self.p = np.full(64, np.nan)

    def clear(self) -> None:
        self.arrays = _empty(64, 64, self.n_tasks)
        self.p = np.full(64, np.nan)

    def live(self, t: int) -> Any:
        """The slots of task ``t``'s open examples."""
        return self.arrays.heap[t, : self.arrays.hlen[t]]

    def reserve(self, slots: int, width: int) -> None:
        """Room for ``slots`` more pending examples of up to ``width`` features."""
        a = self.arrays
        cap = a.task.shape[0]
        if a.nfree[0] >= slots and a.fidx.shape[1] >= width:
            return
        new_cap = max(cap, cap - int(a.nfree[0]) + slots)
        if new_cap > cap:
            new_cap = max(new_cap, 2 * cap)
        rows = {
            name: grow(getattr(a, name), new_cap)
            for name in (
                "task", "user", "key", "item", "open_ts", "deadline", "conv", "flen", "total"
            )
        }  # fmt: skip
        rows["link"] = grow(a.link, new_cap, -1)
        w = max(width, a.fidx.shape[1])
        for name in ("fidx", "fval"):
            old = getattr(a, name)
            rows[name] = np.zeros((new_cap, w), old.dtype)
            rows[name][:cap, : old.shape[1]] = old
        if new_cap > cap:
            rows["heap"] = np.zeros((2 * self.n_tasks, new_cap), np.int64)
            rows["heap"][:, :cap] = a.heap
            added = np.arange(new_cap - 1, cap - 1, -1, dtype=np.int64)
            free = np.concatenate([added, a.free[: a.nfree[0]]])
            rows["free"] = np.zeros(new_cap, np.int64)
            rows["free"][: len(free)] = free
            a.nfree[0] = len(free)
        self.arrays = a._replace(**rows)
        self.p = grow(self.p, new_cap, np.nan)

    def give_back(self, slots: I64) -> None:
        """Free ``slots``."""
        a, n = self.arrays, len(slots)
        a.free[a.nfree[0] : a.nfree[0] + n] = slots
        a.nfree[0] += n

    def wkey(self, t: int, user: str, key: str) -> int:
        tables = self.tables
        code = tables.keys(t).code[key]
        return (tables.users.code[user] * self.n_tasks + t) * KEYSPACE + code

    def adopt(
        self,
        taken: dict[int, tuple[list[Pending], dict[tuple[str, str], list[Pending]]]],
        watermark: float,
    ) -> None:
        """Take over the open pending examples of the delayed tasks (by task number): each
        task's open examples (and those a conversion can still convert, which their
        ``converted`` flags tell here); with ``feedback = "wait"``, those whose wait has not
        ended at ``watermark`` (``open_ts + wait >= watermark``: not learned yet) await it."""
        self.clear()
        pendings = [(t, p) for t, (open_, _) in taken.items() for p in open_]
        self.reserve(len(pendings), max((len(p.idx) // 8 for _, p in pendings), default=0))
        tables = self.tables
        by_item, by_user = tables.by_item, tables.by_user
        tables.intern(
            [p.user for _, p in pendings] + [p.key for t, p in pendings if by_user[t]],
            [p.item for _, p in pendings if p.item is not None]
            + [p.key for t, p in pendings if by_item[t]],
            [p.key for t, p in pendings if not by_item[t] and not by_user[t]],
            [],
        )
        a = self.arrays
        slots: dict[int, int] = {}
        for t, p in pendings:
            a.nfree[0] -= 1
            slot = slots[id(p)] = int(a.free[a.nfree[0]])
            self._fill(slot, t, p)
        for t, (open_, _) in taken.items():
            chains: dict[tuple[str, str], list[Pending]] = {}
            for p in open_:
                chains.setdefault((p.user, p.key), []).append(p)
            for (user, key), chain in chains.items():
                later = -1
                for p in sorted(chain, key=lambda p: p.open_ts):  # linked latest first
                    slot = slots[id(p)]
                    a.link[slot] = later
                    later = slot
                a.waiting[self.wkey(t, user, key)] = later
            live = np.array([slots[id(p)] for p in open_], np.int64)
            push_all(a, t, live, tables.users.rank(), tables.keys(t).rank())
            wait = float(tables.wait[t])
            if wait > 0.0:
                unwaited = live[a.open_ts[live] + wait >= watermark]
                push_all(a, self.n_tasks + t, unwaited, tables.users.rank(), tables.keys(t).rank())

    def _fill(self, slot: int, t: int, p: Pending) -> None:
        a, tables = self.arrays, self.tables
        idx = np.frombuffer(p.idx, dtype=np.int64)
        a.task[slot] = t
        a.user[slot] = tables.users.code[p.user]
        a.key[slot] = tables.keys(t).code[p.key]
        a.item[slot] = -1 if p.item is None else tables.items.code[p.item]
        a.open_ts[slot] = p.open_ts
        a.deadline[slot] = p.deadline
        a.conv[slot] = p.converted
        a.total[slot] = p.total
        self.p[slot] = p.p
        a.flen[slot] = len(idx)
        a.fidx[slot, : len(idx)] = idx
        a.fval[slot, : len(idx)] = np.frombuffer(p.val, dtype=np.float64)

    def hand_back(self, t: int) -> tuple[list[Pending], list[Pending]]:
        """Task ``t``'s open examples as objects, and those a conversion can still convert
        (of each user and key, by exposure time; a regression task's examples await
        conversions until their window closes, converted or not)."""
        live = self.live(t)
        every = bool(self.tables.regression[t])
        by_slot = dict(zip(live.tolist(), self.pendings(live), strict=True))
        link = self.arrays.link
        waiting: list[Pending] = []
        for wkey, head in self.arrays.waiting.items():
            if wkey // KEYSPACE % self.n_tasks != t:
                continue
            chain = []
            slot = head
            while slot >= 0:
                if every or not by_slot[slot].converted:
                    chain.append(by_slot[slot])
                slot = int(link[slot])
            waiting.extend(reversed(chain))
        return list(by_slot.values()), waiting

    def pendings(self, slots: I64) -> list[Pending]:
        """The pending examples in ``slots`` (all of one task) as :class:`Pending` objects."""
        if not len(slots):
            return []
        a, tables = self.arrays, self.tables
        keys = tables.keys(int(a.task[slots[0]])).names
        users, items = tables.users.names, tables.items.names
        width = a.fidx.shape[1]
        fidx = memoryview(a.fidx[slots].tobytes())
        fval = memoryview(a.fval[slots].tobytes())
        out = []
        for j, (u, k, it, o, d, p, c, m, total) in enumerate(
            zip(
                a.user[slots].tolist(),
                a.key[slots].tolist(),
                a.item[slots].tolist(),
                a.open_ts[slots].tolist(),
                a.deadline[slots].tolist(),
                self.p[slots].tolist(),
                a.conv[slots].tolist(),
                a.flen[slots].tolist(),
                a.total[slots].tolist(),
                strict=True,
            )
        ):
            s = 8 * j * width
            out.append(
                Pending(
                    users[u],
                    keys[k],
                    None if it < 0 else items[it],
                    o,
                    d,
                    bytes(fidx[s : s + 8 * m]),
                    bytes(fval[s : s + 8 * m]),
                    p,
                    c,
                    total,
                )
            )
        return out

    def columns(
        self, t: int, made: I64, converted: I64, values: npt.NDArray[np.float64] | None = None
    ) -> PendingColumns:
        """The pending log of task ``t``: the examples in slots ``made``, the conversions of
        those in slots ``converted`` and the value each added (``values``, regression tasks;
        else None), laid out as ``PendingLog.columns`` lays out a task's log."""
        a, tables = self.arrays, self.tables
        user, key, item = a.user, a.key, a.item
        spaces = (tables.users, tables.keys(t), tables.items)
        codes = (
            np.concatenate((user[made], user[converted])),
            np.concatenate((key[made], key[converted])),
            item[made][item[made] >= 0],
        )
        uniq = [np.unique(c) for c in codes]
        strings = [[sp.names[c] for c in u.tolist()] for sp, u in zip(spaces, uniq, strict=True)]
        names = sorted(set().union(*strings))
        at = {name: j for j, name in enumerate(names)}
        position = [np.array([at[v] for v in group], np.int32) for group in strings]

        def refs(space: int, of: I64) -> bytes:
            out = np.full(len(of), -1, np.int32)
            known = of >= 0
            out[known] = position[space][np.searchsorted(uniq[space], of[known])]
            return out.tobytes()

        flen = a.flen[made]
        totals = a.total[made]
        added = np.zeros(0) if values is None else np.asarray(values, np.float64)
        fidx, fval = _gather(made, flen, a.fidx, a.fval)
        return PendingColumns(
            names,
            refs(0, user[made]),
            refs(1, key[made]),
            refs(2, item[made]),
            a.open_ts[made].tobytes(),
            a.deadline[made].tobytes(),
            self.p[made].tobytes(),
            a.conv[made].tobytes(),
            flen.astype(np.uint32).tobytes(),
            fidx.tobytes(),
            *split_ones(fval),
            refs(0, user[converted]),
            refs(1, key[converted]),
            a.open_ts[converted].tobytes(),
            # only regression tasks have totals: the logs of the others stay as they were
            totals.tobytes() if len(added) or totals.any() else b"",
            added.tobytes(),
        )


@numba.njit(cache=True, nogil=True)
def _gather(slots, flen, pd_fidx, pd_fval):  # type: ignore[no-untyped-def]
    """The features of the pending examples in ``slots``, concatenated (indices as uint32)."""
    fidx = np.empty(flen.sum(), np.uint32)
    fval = np.empty(flen.sum(), np.float64)
    m = 0
    for j in range(slots.shape[0]):
        s = slots[j]
        for q in range(flen[j]):
            fidx[m] = pd_fidx[s, q]
            fval[m] = pd_fval[s, q]
            m += 1
    return fidx, fval

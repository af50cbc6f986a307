"""Compiled updates of one profile or item row, and of the pending examples' deadline heaps.

Each function here is the array form of one method of the Python step's objects, named in its
docstring, over the records of :mod:`liveprofile.engine.records`; :mod:`liveprofile.engine.kernel`
calls them event by event.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from liveprofile.engine.layout import C_EXAMPLES, C_POSITIVES, KEY_EXAMPLES, KEY_SHIFT, SPEND_DAYS

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def key_slot(users, u, name):  # type: ignore[no-untyped-def]
    """Where user row ``u`` keeps the key outcome ``name`` (-1: nowhere)."""
    for j in range(users.olen[u]):
        if users.okey[u, j] == name:
            return j
    return -1


@_jit
def record_key_outcome(users, u, name, positive, room):  # type: ignore[no-untyped-def]
    """``Profile.record_key_outcome``: count, and past room + room // 4 keep the ``room`` keys
    with the most examples (a stable sort, so ties keep their order)."""
    okey, oval, olen = users.okey, users.oval, users.olen
    j = key_slot(users, u, name)
    add = (1 << KEY_SHIFT if positive else 0) + 1
    if j >= 0:
        oval[u, j] += add
    else:
        j = olen[u]
        okey[u, j] = name
        oval[u, j] = add
        olen[u] = j + 1
    m = olen[u]
    if m > room + room // 4:
        order = np.argsort(-(oval[u, :m] & KEY_EXAMPLES), kind="mergesort")
        keys = okey[u, :m].copy()
        vals = oval[u, :m].copy()
        for q in range(room):
            okey[u, q] = keys[order[q]]
            oval[u, q] = vals[order[q]]
        olen[u] = room


@_jit
def add_spend(users, u, day, cents):  # type: ignore[no-untyped-def]
    """``ProfileUpdater._add_spend``: add to a day's spend, keeping SPEND_DAYS days."""
    sday, scents, slen = users.sday, users.scents, users.slen
    m = slen[u]
    latest = -(1 << 62)
    for j in range(m):
        if sday[u, j] == day:
            scents[u, j] += cents
            return
        if sday[u, j] > latest:
            latest = sday[u, j]
    if m > 0 and day < latest - SPEND_DAYS:
        return
    sday[u, m] = day
    scents[u, m] = cents
    m += 1
    cutoff = day - SPEND_DAYS
    w = 0
    for j in range(m):
        if sday[u, j] >= cutoff:
            sday[u, w] = sday[u, j]
            scents[u, w] = scents[u, j]
            w += 1
    slen[u] = w


@_jit
def _recent_less(users, u, j, ts, ty, it, va, codes):  # type: ignore[no-untyped-def]
    """Whether the entry (ts, ty, it, va) sorts before entry ``j`` of user row ``u`` in the
    total order of ``risk._recent_order``."""
    type_rank, item_rank = codes.type_rank, codes.item_rank
    ts_b, ty_b, it_b, va_b = users.rts[u, j], users.rty[u, j], users.rit[u, j], users.rva[u, j]
    if ts != ts_b:
        return ts < ts_b
    if type_rank[ty] != type_rank[ty_b]:
        return type_rank[ty] < type_rank[ty_b]
    ha, hb = it >= 0, it_b >= 0
    if ha != hb:
        return hb
    if ha and item_rank[it] != item_rank[it_b]:
        return item_rank[it] < item_rank[it_b]
    na, nb = not math.isnan(va), not math.isnan(va_b)
    if na != nb:
        return nb
    a = va if na else 0.0
    b = va_b if nb else 0.0
    return a < b


@_jit
def add_recent(users, u, ts, ty, it, va, size, codes):  # type: ignore[no-untyped-def]
    """``risk.add_recent``: insert after equal entries, keep the newest ``size``."""
    if size <= 0:
        return
    rts, rty, rit, rva, rlen = users.rts, users.rty, users.rit, users.rva, users.rlen
    m = rlen[u]
    pos = m
    while pos > 0 and _recent_less(users, u, pos - 1, ts, ty, it, va, codes):
        pos -= 1
    for j in range(m, pos, -1):
        rts[u, j] = rts[u, j - 1]
        rty[u, j] = rty[u, j - 1]
        rit[u, j] = rit[u, j - 1]
        rva[u, j] = rva[u, j - 1]
    rts[u, pos] = ts
    rty[u, pos] = ty
    rit[u, pos] = it
    rva[u, pos] = va
    m += 1
    if m > size:
        drop = m - size
        for j in range(size):
            rts[u, j] = rts[u, j + drop]
            rty[u, j] = rty[u, j + drop]
            rit[u, j] = rit[u, j + drop]
            rva[u, j] = rva[u, j + drop]
        m = size
    rlen[u] = m


@_jit
def count(rows, r, t, label, tick):  # type: ignore[no-untyped-def]
    """``record_outcome`` on row ``r`` of users or items: count an example (and a positive);
    ``rows.first`` keeps the ``tick`` at which each count first became non-zero, for the order
    of the keys of the stored dicts. Returns the next tick."""
    c, first = rows.count, rows.first
    if c[r, C_EXAMPLES, t] == 0:
        first[r, C_EXAMPLES, t] = tick
    c[r, C_EXAMPLES, t] += 1
    if label:
        if c[r, C_POSITIVES, t] == 0:
            first[r, C_POSITIVES, t] = tick
        c[r, C_POSITIVES, t] += 1
    return tick + 1


# -- the deadline heap of each task's pending examples ------------------------------------------


@_jit
def _heap_less(pool, a, b, user_rank, key_rank):  # type: ignore[no-untyped-def]
    """The order of the Python step's heap tuples (deadline, open_ts, user, key)."""
    if pool.deadline[a] != pool.deadline[b]:
        return pool.deadline[a] < pool.deadline[b]
    if pool.open_ts[a] != pool.open_ts[b]:
        return pool.open_ts[a] < pool.open_ts[b]
    ua, ub = user_rank[pool.user[a]], user_rank[pool.user[b]]
    if ua != ub:
        return ua < ub
    return key_rank[pool.key[a]] < key_rank[pool.key[b]]


@_jit
def heap_push(pool, t, slot, user_rank, key_rank):  # type: ignore[no-untyped-def]
    heap, hlen = pool.heap, pool.hlen
    i = hlen[t]
    heap[t, i] = slot
    hlen[t] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        if _heap_less(pool, heap[t, i], heap[t, parent], user_rank, key_rank):
            heap[t, i], heap[t, parent] = heap[t, parent], heap[t, i]
            i = parent
        else:
            break


@_jit
def heap_pop(pool, t, user_rank, key_rank):  # type: ignore[no-untyped-def]
    heap, hlen = pool.heap, pool.hlen
    top = heap[t, 0]
    n = hlen[t] - 1
    hlen[t] = n
    if n > 0:
        heap[t, 0] = heap[t, n]
        i = 0
        while True:
            left = 2 * i + 1
            if left >= n:
                break
            child = left
            right = left + 1
            if right < n and _heap_less(pool, heap[t, right], heap[t, left], user_rank, key_rank):
                child = right
            if _heap_less(pool, heap[t, child], heap[t, i], user_rank, key_rank):
                heap[t, i], heap[t, child] = heap[t, child], heap[t, i]
                i = child
            else:
                break
    return top


@_jit
def push_all(pool, t, slots, user_rank, key_rank):  # type: ignore[no-untyped-def]
    """Push the pending examples in ``slots`` onto task ``t``'s heap."""
    for s in slots:
        heap_push(pool, t, s, user_rank, key_rank)

"""Compiled updates of one profile or item row, and of the pending examples' deadline heaps.

Each function here is the array form of one method of the profile's objects, named in its
docstring, over the records of :mod:`liveprofile.engine.records`; :mod:`liveprofile.engine.kernel`
calls them event by event.
"""

from __future__ import annotations

import math

import numpy as np

from liveprofile.engine import behaviour
from liveprofile.engine.jit import jit, leaf
from liveprofile.engine.layout import (
    C_EXAMPLES,
    C_POSITIVES,
    FP_H_COUNTERS,
    FP_H_INTERESTS,
    FP_TWO,
    P_ANCHOR,
    SPEND_DAYS,
)
from liveprofile.engine.rules import decay_factor, key_outcome_counts, key_outcome_step, trim_limit


@leaf
def key_slot(users, u, name):  # type: ignore[no-untyped-def]
    """Where user row ``u`` keeps the key outcome ``name`` (-1: nowhere)."""
    users_olen = users.olen
    users_okey = users.okey
    for j in range(users_olen[u]):
        if users_okey[u, j] == name:
            return j
    return -1


@leaf
def record_key_outcome(users, u, name, positive, room):  # type: ignore[no-untyped-def]
    """``Profile.record_key_outcome``: count, and past ``trim_limit(room)`` keep the ``room`` keys
    with the most examples (a stable sort, so ties keep their order)."""
    users_okey = users.okey
    users_oval = users.oval
    users_olen = users.olen
    okey, oval, olen = users_okey, users_oval, users_olen
    j = key_slot(users, u, name)
    add = key_outcome_step(positive)
    if j >= 0:
        oval[u, j] += add
    else:
        j = olen[u]
        okey[u, j] = name
        oval[u, j] = add
        olen[u] = j + 1
    m = olen[u]
    if m > trim_limit(room):
        # a stable insertion sort by examples, in place (no array is allocated here)
        for q in range(1, m):
            name_q, val_q = okey[u, q], oval[u, q]
            n_q = key_outcome_counts(val_q)[1]
            j = q
            while j > 0 and key_outcome_counts(oval[u, j - 1])[1] < n_q:
                okey[u, j] = okey[u, j - 1]
                oval[u, j] = oval[u, j - 1]
                j -= 1
            okey[u, j] = name_q
            oval[u, j] = val_q
        olen[u] = room


@leaf
def add_spend(users, u, day, cents):  # type: ignore[no-untyped-def]
    """``ProfileUpdater._add_spend``: add to a day's spend, keeping SPEND_DAYS days."""
    users_sday = users.sday
    users_scents = users.scents
    users_slen = users.slen
    sday, scents, slen = users_sday, users_scents, users_slen
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
    keep_spend_since(users, u, m + 1, day - SPEND_DAYS)


@leaf
def keep_spend_since(users, u, m, cutoff):  # type: ignore[no-untyped-def]
    """Keep, of row ``u``'s first ``m`` spend days, those from ``cutoff`` on, in their order."""
    sday, scents = users.sday, users.scents
    w = 0
    for j in range(m):
        if sday[u, j] >= cutoff:
            sday[u, w] = sday[u, j]
            scents[u, w] = scents[u, j]
            w += 1
    users.slen[u] = w


@leaf
def rebase_row(users, u, ts, fp):  # type: ignore[no-untyped-def]
    """``ProfileUpdater.rebase`` on row ``u``: its decayed counters, behaviour maps and
    interests moved to the anchor ``ts``."""
    anchor = users.pf[u, P_ANCHOR]
    two = fp[FP_TWO]
    f_c = decay_factor(ts, anchor, fp[FP_H_COUNTERS], two)
    f_i = decay_factor(ts, anchor, fp[FP_H_INTERESTS], two)
    dec, tord = users.dec, users.tord
    for q in range(users.tlen[u]):
        dec[u, tord[u, q]] *= f_c
    behaviour.rebase(users, u, f_c)
    iv = users.iv
    for q in range(users.il[u]):
        iv[u, q] *= f_i
    users.pf[u, P_ANCHOR] = ts


@leaf
def _recent_less(users, u, j, ts, ty, it, va, codes):  # type: ignore[no-untyped-def]
    """Whether the entry (ts, ty, it, va) sorts before entry ``j`` of user row ``u`` in the
    total order of ``risk._recent_order``."""
    codes_type_rank = codes.type_rank
    codes_item_rank = codes.item_rank
    users_rts = users.rts
    users_rty = users.rty
    users_rit = users.rit
    users_rva = users.rva
    type_rank, item_rank = codes_type_rank, codes_item_rank
    ts_b, ty_b, it_b, va_b = users_rts[u, j], users_rty[u, j], users_rit[u, j], users_rva[u, j]
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


@leaf
def keep_top(users, u, top_k):  # type: ignore[no-untyped-def]
    """``ProfileUpdater.keep_top_interests`` on row ``u``: drop the smallest interests (of
    equals, the earliest inserted, as deleting the first of a stable ascending sort does) until
    at most ``top_k`` are left."""
    m = users.il[u]
    ik, iv = users.ik, users.iv
    while m > top_k:
        low = 0
        for q in range(1, m):
            if iv[u, q] < iv[u, low]:
                low = q
        for q in range(low, m - 1):
            ik[u, q] = ik[u, q + 1]
            iv[u, q] = iv[u, q + 1]
        m -= 1
    users.il[u] = m


@leaf
def add_recent(users, u, ts, ty, it, va, size, codes):  # type: ignore[no-untyped-def]
    """``risk.add_recent``: insert after equal entries, keep the newest ``size``."""
    users_rts = users.rts
    users_rty = users.rty
    users_rit = users.rit
    users_rva = users.rva
    users_rlen = users.rlen
    if size <= 0:
        return
    rts, rty, rit, rva, rlen = users_rts, users_rty, users_rit, users_rva, users_rlen
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


@leaf
def count(rows, r, t, label, tick):  # type: ignore[no-untyped-def]
    """``record_outcome`` on row ``r`` of users or items: count an example (and a positive);
    ``rows.first`` keeps the ``tick`` at which each count first became non-zero, for the order
    of the keys of the stored dicts. Returns the next tick."""
    rows_count = rows.count
    rows_first = rows.first
    c, first = rows_count, rows_first
    if c[r, C_EXAMPLES, t] == 0:
        first[r, C_EXAMPLES, t] = tick
    c[r, C_EXAMPLES, t] += 1
    if label:
        if c[r, C_POSITIVES, t] == 0:
            first[r, C_POSITIVES, t] = tick
        c[r, C_POSITIVES, t] += 1
    return tick + 1


# -- the deadline heap of each task's pending examples ------------------------------------------


@leaf
def _heap_less(pool, a, b, user_rank, key_rank):  # type: ignore[no-untyped-def]
    """The order of a task's heap of pending examples (deadline, open_ts, user, key)."""
    pool_deadline = pool.deadline
    pool_open_ts = pool.open_ts
    pool_user = pool.user
    pool_key = pool.key
    if pool_deadline[a] != pool_deadline[b]:
        return pool_deadline[a] < pool_deadline[b]
    if pool_open_ts[a] != pool_open_ts[b]:
        return pool_open_ts[a] < pool_open_ts[b]
    ua, ub = user_rank[pool_user[a]], user_rank[pool_user[b]]
    if ua != ub:
        return ua < ub
    return key_rank[pool_key[a]] < key_rank[pool_key[b]]


@leaf
def heap_push(pool, t, slot, user_rank, key_rank):  # type: ignore[no-untyped-def]
    pool_heap = pool.heap
    pool_hlen = pool.hlen
    heap, hlen = pool_heap, pool_hlen
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


@leaf
def heap_pop(pool, t, user_rank, key_rank):  # type: ignore[no-untyped-def]
    pool_heap = pool.heap
    pool_hlen = pool.hlen
    heap, hlen = pool_heap, pool_hlen
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


@jit
def heap_due(heap, hlen, deadline, horizon):  # type: ignore[no-untyped-def]
    """The slots among the first ``hlen`` of a heap row (a task's heap, ordered by deadline
    first: :func:`_heap_less`) whose deadline is before ``horizon``, visiting only those and
    their children rather than every open example.

    >>> import numpy as np
    >>> deadline = np.array([5.0, 1.0, 9.0, 3.0, 2.0])
    >>> heap = np.array([1, 4, 2, 3, 0])  # deadlines 1, 2, 9, 3, 5: a heap
    >>> sorted(heap_due(heap, 5, deadline, 4.0).tolist())
    [1, 3, 4]
    """
    out = np.empty(hlen, np.int64)
    todo = np.empty(hlen, np.int64)
    n = top = 0
    if hlen > 0 and deadline[heap[0]] < horizon:
        todo[0] = 0
        top = 1
    while top > 0:
        top -= 1
        i = todo[top]
        out[n] = heap[i]
        n += 1
        for c in (2 * i + 1, 2 * i + 2):
            if c < hlen and deadline[heap[c]] < horizon:
                todo[top] = c
                top += 1
    return out[:n]


@jit
def push_all(pool, t, slots, user_rank, key_rank):  # type: ignore[no-untyped-def]
    """Push the pending examples in ``slots`` onto task ``t``'s heap."""
    for s in slots:
        heap_push(pool, t, s, user_rank, key_rank)

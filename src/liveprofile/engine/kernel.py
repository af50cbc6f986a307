"""The compiled step: the per-event work of :meth:`liveprofile.engine.core.Core.step` on arrays.

:mod:`liveprofile.engine.compiled` lays a batch out as arrays (events, the profiles and item
statistics they touch, the open pending examples, the feature tables) and calls :func:`run`,
which does for every event, in order, what the Python core does: advance the watermark and close
the pending examples it makes due, resolve conversions, build the features from the profile
*before* the event, open exposures, then update the profile and the item statistics. It emits
the same model operations in the same order, so the learner, and every float it computes, is
the same as with the Python core, which stays the reference (``tests/test_compiled.py``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from liveprofile.engine.layout import (
    DAY,
    F_AFFINITY,
    F_BIAS,
    F_CROSS_SALT,
    F_I_NEW_TASK,
    F_I_RATE,
    F_INTEREST,
    F_ITEM_NEW,
    F_ITEM_POP,
    F_KEY_RATE,
    F_RECENCY,
    F_TOP0,
    F_TOP1,
    F_U_NEW_TASK,
    F_U_RATE,
    F_USER_NEW,
    FP_H_COUNTERS,
    FP_H_INTERESTS,
    FP_H_MIN,
    FP_PRIOR,
    FP_STRENGTH,
    FP_TWO,
    FP_WATERMARK,
    HOUR,
    I_ANCHOR,
    I_CAT,
    I_EXISTS,
    I_LAST,
    I_N,
    I_POP,
    I_VN,
    I_VSUM,
    IP_CROSSES,
    IP_KEY_ROOM,
    IP_MASK,
    IP_RECENT,
    IP_TICK,
    IP_TIME,
    IP_TOP_K,
    IP_TRACK,
    KEY_EXAMPLES,
    KEY_SHIFT,
    KEYSPACE,
    LEARN,
    MIX,
    P_ANCHOR,
    P_EXISTS,
    P_FIRST,
    P_LAST,
    P_LASTPUR,
    P_MONETARY,
    P_N,
    P_PURCHASES,
    P_VN,
    P_VSUM,
    PREDICT,
    PREDICT_LEARN,
    R_IMMEDIATE,
    R_OPENED,
    R_RESOLVED,
    REBASE_AFTER,
    SPEND_DAYS,
    T_AFFINITY,
    T_EVENTS,
    T_HOUR,
    T_I_RATE,
    T_I_SEEN,
    T_INTEREST,
    T_ITEM_POP,
    T_ITEM_VALUE,
    T_KEY_RATE,
    T_KEY_SEEN,
    T_MONETARY,
    T_RECENCY,
    T_U_RATE,
    T_U_SEEN,
    T_USER_VALUE,
    T_WEEKDAY,
)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _clip(tabs, last, row, b):  # type: ignore[no-untyped-def]
    """Bucket ``b`` of table ``row``, the last bucket taking everything past it."""
    return tabs[row, b if b < last[row] else last[row]]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _bucket(tabs, last, row, x):  # type: ignore[no-untyped-def]
    """``_bucket`` of the Python feature builder: round half to even, then clip."""
    r = np.rint(x)
    if r < 0.0:
        r = 0.0
    return _clip(tabs, last, row, int(r))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _log2_bucket(tabs, last, row, x):  # type: ignore[no-untyped-def]
    """``_log2_bucket`` of the Python feature builder."""
    return _clip(tabs, last, row, int(math.log2(1.0 + x)))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _decile(tabs, last, row, x):  # type: ignore[no-untyped-def]
    """``_decile`` of the Python feature builder."""
    return _clip(tabs, last, row, int(x * 10))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _key_slot(okey, olen, u, name):  # type: ignore[no-untyped-def]
    for j in range(olen[u]):
        if okey[u, j] == name:
            return j
    return -1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _record_key_outcome(okey, oval, olen, u, name, positive, room):  # type: ignore[no-untyped-def]
    """``Profile.record_key_outcome``: count, and past room + room // 4 keep the ``room`` keys
    with the most examples (a stable sort, so ties keep their order)."""
    j = _key_slot(okey, olen, u, name)
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _add_spend(sday, scents, slen, u, day, cents):  # type: ignore[no-untyped-def]
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _recent_less(ts_a, ty_a, it_a, va_a, ts_b, ty_b, it_b, va_b, type_rank, item_rank):  # type: ignore[no-untyped-def]
    """Whether entry a sorts before entry b in the total order of ``risk._recent_order``."""
    if ts_a != ts_b:
        return ts_a < ts_b
    if type_rank[ty_a] != type_rank[ty_b]:
        return type_rank[ty_a] < type_rank[ty_b]
    ha, hb = it_a >= 0, it_b >= 0
    if ha != hb:
        return hb
    if ha and item_rank[it_a] != item_rank[it_b]:
        return item_rank[it_a] < item_rank[it_b]
    na, nb = not math.isnan(va_a), not math.isnan(va_b)
    if na != nb:
        return nb
    a = va_a if na else 0.0
    b = va_b if nb else 0.0
    return a < b


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _add_recent(rts, rty, rit, rva, rlen, u, ts, ty, it, va, size, type_rank, item_rank):  # type: ignore[no-untyped-def]
    """``risk.add_recent``: insert after equal entries, keep the newest ``size``."""
    if size <= 0:
        return
    m = rlen[u]
    pos = m
    while pos > 0 and _recent_less(
        ts,
        ty,
        it,
        va,
        rts[u, pos - 1],
        rty[u, pos - 1],
        rit[u, pos - 1],
        rva[u, pos - 1],
        type_rank,
        item_rank,
    ):
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _heap_less(a, b, pd_dl, pd_open, pd_user, pd_key, user_rank, key_rank):  # type: ignore[no-untyped-def]
    """The order of the Python core's heap tuples (deadline, open_ts, user, key)."""
    if pd_dl[a] != pd_dl[b]:
        return pd_dl[a] < pd_dl[b]
    if pd_open[a] != pd_open[b]:
        return pd_open[a] < pd_open[b]
    ua, ub = user_rank[pd_user[a]], user_rank[pd_user[b]]
    if ua != ub:
        return ua < ub
    return key_rank[pd_key[a]] < key_rank[pd_key[b]]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _heap_push(heap, hlen, t, slot, pd_dl, pd_open, pd_user, pd_key, user_rank, key_rank):  # type: ignore[no-untyped-def]
    i = hlen[t]
    heap[t, i] = slot
    hlen[t] = i + 1
    while i > 0:
        parent = (i - 1) >> 1
        if _heap_less(
            heap[t, i], heap[t, parent], pd_dl, pd_open, pd_user, pd_key, user_rank, key_rank
        ):
            heap[t, i], heap[t, parent] = heap[t, parent], heap[t, i]
            i = parent
        else:
            break


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _heap_pop(heap, hlen, t, pd_dl, pd_open, pd_user, pd_key, user_rank, key_rank):  # type: ignore[no-untyped-def]
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
            if right < n and _heap_less(
                heap[t, right], heap[t, left], pd_dl, pd_open, pd_user, pd_key, user_rank, key_rank
            ):
                child = right
            if _heap_less(
                heap[t, child], heap[t, i], pd_dl, pd_open, pd_user, pd_key, user_rank, key_rank
            ):
                heap[t, i], heap[t, child] = heap[t, child], heap[t, i]
                i = child
            else:
                break
    return top


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _add_record(recs, rec_ts, rec_label, n, kind, t, k, ref, ts, label):  # type: ignore[no-untyped-def]
    """Append a record (kind, task, operation, user row or slot, event time, label)."""
    recs[n, 0] = kind
    recs[n, 1] = t
    recs[n, 2] = k
    recs[n, 3] = ref
    rec_ts[n] = ts
    rec_label[n] = label
    return n + 1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _put(fidx, fval, m, i, v):  # type: ignore[no-untyped-def]
    """Set feature ``m``; returns the next position."""
    fidx[m] = i
    fval[m] = v
    return m + 1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _rate_features(fidx, fval, m, positives, n, fp, f_rate, tabs, last, rate_row, seen_row):  # type: ignore[no-untyped-def]
    """A positive rate shrunk toward the prior: its distance from the prior, its decile bucket
    and a bucket of how many examples it rests on (FeatureBuilder.task_features)."""
    prior, strength = fp[FP_PRIOR], fp[FP_STRENGTH]
    rate = (positives + prior * strength) / (n + strength)
    m = _put(fidx, fval, m, f_rate, rate - prior)
    m = _put(fidx, fval, m, _decile(tabs, last, rate_row, rate), 1.0)
    return _put(fidx, fval, m, _log2_bucket(tabs, last, seen_row, float(n)), 1.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _count(examples, positives, r, t, label, first, tick):  # type: ignore[no-untyped-def]
    """``record_outcome``: count an example (and a positive); ``first[r, 0|1, t]`` keeps when
    each count first became non-zero, for the order of the keys of the stored dicts."""
    if examples[r, t] == 0:
        first[r, 0, t] = tick
    examples[r, t] += 1
    if label:
        if positives[r, t] == 0:
            first[r, 1, t] = tick
        positives[r, t] += 1
    return tick + 1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _add_op(t, kind, fidx, fval, f0, f1, y, op_kind, op_start, op_idx, op_val, op_y, n_ops):  # type: ignore[no-untyped-def]
    """Append one model operation with features ``fidx/fval[f0:f1]``; returns its position."""
    k = n_ops[t]
    s = op_start[t, k]
    for j in range(f0, f1):
        op_idx[t, s] = fidx[j]
        op_val[t, s] = fval[j]
        s += 1
    op_kind[t, k] = kind
    op_y[t, k] = y
    op_start[t, k + 1] = s
    n_ops[t] = k + 1
    return k


@numba.njit(cache=True, nogil=True, error_model="numpy")
def run(  # type: ignore[no-untyped-def]
    # events
    ev_ok,
    ev_urow,
    ev_ucode,
    ev_irow,
    ev_icode,
    ev_type,
    ev_ts,
    ev_val,
    ev_cat,
    tp_start,
    tp_code,
    # tables by code
    user_fidx,
    user_part,
    user_rank,
    item_fidx,
    topic_fidx,
    topic_part,
    topic_track,
    type_fidx,
    type_dec_fidx,
    type_monetary,
    type_weight,
    type_rank,
    item_rank,
    # tasks
    task_delayed,
    task_on,
    task_conv,
    task_pos,
    task_has_pos,
    task_threshold,
    task_by_item,
    task_window,
    ko_topic,
    ko_item,
    key_rank_topic,
    key_rank_item,
    # feature tables and parameters
    fc,
    tabs,
    last_b,
    fp,
    ip,
    # profiles (local rows)
    pf,
    pi,
    cnt,
    dec,
    tord,
    tlen,
    ik,
    iv,
    il,
    okey,
    oval,
    olen,
    sday,
    scents,
    slen,
    rts,
    rty,
    rit,
    rva,
    rlen,
    upos,
    uex,
    u_first,
    utouched,
    # items (local rows)
    xf,
    xi,
    xpos,
    xex,
    x_first,
    xtouched,
    # pending examples (pool of slots) and per-task heaps
    urow_of,
    irow_of,
    waiting,
    pd_task,
    pd_user,
    pd_key,
    pd_item,
    pd_open,
    pd_dl,
    pd_conv,
    pd_flen,
    pd_fidx,
    pd_fval,
    free,
    nfree,
    heap,
    hlen,
    # outputs
    op_kind,
    op_start,
    op_idx,
    op_val,
    op_y,
    n_ops,
    recs,
    rec_ts,
    rec_label,
    created,
    n_created,
    converted,
    n_converted,
    freed,
    out,
):
    n_tasks = task_delayed.shape[0]
    h_c, h_i, h_min = fp[FP_H_COUNTERS], fp[FP_H_INTERESTS], fp[FP_H_MIN]
    watermark = fp[FP_WATERMARK]
    # 2.0 as data: a literal base lets the compiler turn pow(2, x) into exp2(x), which can
    # differ from the pow() Python calls in the last bit
    two = fp[FP_TWO]
    crosses, with_time, top_k = ip[IP_CROSSES] != 0, ip[IP_TIME] != 0, ip[IP_TOP_K]
    room, recent, track = ip[IP_KEY_ROOM], ip[IP_RECENT], ip[IP_TRACK] != 0
    keyspace = KEYSPACE
    mask = ip[IP_MASK]
    width = pd_fidx.shape[1]
    fidx = np.empty(width, np.int64)
    fval = np.empty(width, np.float64)
    # this event's label per immediate task (-1: none), counted once the profile is updated
    labels = np.full(n_tasks, -1, np.int8)
    n_rec = 0
    n_freed = 0
    tick = ip[IP_TICK]
    applied = 0
    examples = 0
    for e in range(ev_ok.shape[0]):
        if not ev_ok[e]:
            continue
        ts = ev_ts[e]
        if ts > watermark:
            watermark = ts
            for t in range(n_tasks):
                if not task_delayed[t]:
                    continue
                while hlen[t] > 0 and pd_dl[heap[t, 0]] < watermark:
                    slot = _heap_pop(
                        heap,
                        hlen,
                        t,
                        pd_dl,
                        pd_open,
                        pd_user,
                        pd_key,
                        user_rank,
                        key_rank_item if task_by_item[t] else key_rank_topic,
                    )
                    # resolve (as Core._resolve)
                    label = pd_conv[slot]
                    k = _add_op(
                        t,
                        LEARN,
                        pd_fidx[slot],
                        pd_fval[slot],
                        0,
                        pd_flen[slot],
                        1.0 if label else 0.0,
                        op_kind,
                        op_start,
                        op_idx,
                        op_val,
                        op_y,
                        n_ops,
                    )
                    wkey = (pd_user[slot] * n_tasks + t) * keyspace + pd_key[slot]
                    if wkey in waiting and waiting[wkey] == slot:
                        del waiting[wkey]
                    n_rec = _add_record(
                        recs,
                        rec_ts,
                        rec_label,
                        n_rec,
                        R_RESOLVED,
                        t,
                        -1,
                        slot,
                        pd_open[slot],
                        label,
                    )
                    examples += 1
                    ru = urow_of[pd_user[slot]]
                    if ru >= 0 and pi[ru, P_EXISTS]:
                        tick = _count(uex, upos, ru, t, label, u_first, tick)
                        name = (
                            ko_item[t, pd_key[slot]]
                            if task_by_item[t]
                            else ko_topic[t, pd_key[slot]]
                        )
                        _record_key_outcome(okey, oval, olen, ru, name, label, room)
                        utouched[ru] = True
                    if pd_item[slot] >= 0:
                        ri = irow_of[pd_item[slot]]
                        if ri >= 0 and xi[ri, I_EXISTS]:
                            tick = _count(xex, xpos, ri, t, label, x_first, tick)
                            xtouched[ri] = True
                    freed[n_freed] = slot
                    n_freed += 1
        u = ev_urow[e]
        ucode = ev_ucode[e]
        it = ev_irow[e]
        icode = ev_icode[e]
        kind = ev_type[e]
        value = ev_val[e]
        has_value = not math.isnan(value)
        t0, t1 = tp_start[e], tp_start[e + 1]
        p_exists = pi[u, P_EXISTS] != 0
        i_exists = it >= 0 and xi[it, I_EXISTS] != 0
        n_shared = -1  # features not built yet
        for t in range(n_tasks):
            if task_delayed[t]:
                # conversion
                if task_conv[t, kind]:
                    key = icode if task_by_item[t] else ev_cat[e]
                    if key >= 0:
                        wkey = (ucode * n_tasks + t) * keyspace + key
                        if wkey in waiting:
                            slot = waiting[wkey]
                            if pd_open[slot] < ts <= pd_dl[slot]:
                                pd_conv[slot] = True
                                del waiting[wkey]
                                converted[t, n_converted[t]] = slot
                                n_converted[t] += 1
                if not task_on[t, kind]:
                    continue
                key = icode if task_by_item[t] else ev_cat[e]
                if key < 0:
                    continue
                wkey = (ucode * n_tasks + t) * keyspace + key
                if wkey in waiting:
                    continue
            else:
                if not task_on[t, kind]:
                    continue
                if task_has_pos[t]:
                    label = task_pos[t, kind]
                else:
                    label = has_value and value >= task_threshold[t]
                labels[t] = 1 if label else 0
                key = -1
            if n_shared < 0:
                # shared features (FeatureBuilder.build), from the profile before this event
                m = 0
                m = _put(fidx, fval, m, fc[F_BIAS], 1.0)
                m = _put(fidx, fval, m, user_fidx[ucode], 1.0)
                m = _put(fidx, fval, m, type_fidx[kind], 1.0)
                if icode >= 0:
                    m = _put(fidx, fval, m, item_fidx[icode], 1.0)
                if t1 > t0:
                    w = 1.0 / math.sqrt(t1 - t0)
                    for q in range(t0, t1):
                        tc = tp_code[q]
                        m = _put(fidx, fval, m, topic_fidx[tc], w)
                        if crosses:
                            h = (user_part[ucode] * MIX + topic_part[tc]) ^ fc[F_CROSS_SALT]
                            m = _put(fidx, fval, m, h & mask, w)
                if with_time:
                    its = int(ts)
                    day = its // int(DAY)
                    second = its - day * int(DAY)
                    m = _put(fidx, fval, m, tabs[T_HOUR, second // int(HOUR)], 1.0)
                    m = _put(fidx, fval, m, tabs[T_WEEKDAY, (day + 3) % 7], 1.0)
                if not p_exists:
                    m = _put(fidx, fval, m, fc[F_USER_NEW], 1.0)
                else:
                    last = pf[u, P_LAST]
                    anchor = pf[u, P_ANCHOR]
                    rec = (ts - last) / DAY
                    if rec < 0.0:
                        rec = 0.0
                    m = _put(fidx, fval, m, fc[F_RECENCY], math.log1p(rec))
                    m = _put(fidx, fval, m, _log2_bucket(tabs, last_b, T_RECENCY, rec * 24), 1.0)
                    m = _put(
                        fidx, fval, m, _log2_bucket(tabs, last_b, T_EVENTS, float(pi[u, P_N])), 1.0
                    )
                    at = ts if ts > last else last
                    f_c = two ** (-(at - anchor) / h_c)
                    for q in range(tlen[u]):
                        ty = tord[u, q]
                        m = _put(fidx, fval, m, type_dec_fidx[ty], math.log1p(dec[u, ty] * f_c))
                    if pf[u, P_MONETARY] != 0.0:
                        m = _put(
                            fidx,
                            fval,
                            m,
                            _log2_bucket(tabs, last_b, T_MONETARY, pf[u, P_MONETARY]),
                            1.0,
                        )
                    if pi[u, P_VN]:
                        b = _bucket(tabs, last_b, T_USER_VALUE, 2 * pf[u, P_VSUM] / pi[u, P_VN])
                        m = _put(fidx, fval, m, b, 1.0)
                    n_int = il[u]
                    if t1 > t0 and n_int > 0:
                        total = 0.0
                        for q in range(n_int):
                            total += iv[u, q]
                        share = 0.0
                        if total > 0:
                            s = 0.0
                            for q in range(t0, t1):
                                for r in range(n_int):
                                    if ik[u, r] == tp_code[q]:
                                        s += iv[u, r]
                                        break
                            share = s / total
                        best = 0
                        for q in range(1, n_int):
                            if iv[u, q] > iv[u, best]:
                                best = q
                        top_in = False
                        for q in range(t0, t1):
                            if tp_code[q] == ik[u, best]:
                                top_in = True
                        own = 0.0
                        for r in range(n_int):
                            if ik[u, r] == tp_code[t0]:
                                own = iv[u, r]
                                break
                        own = own * two ** (-(at - anchor) / h_i)
                        m = _put(fidx, fval, m, fc[F_AFFINITY], share)
                        m = _put(fidx, fval, m, _decile(tabs, last_b, T_AFFINITY, share), 1.0)
                        m = _put(fidx, fval, m, fc[F_TOP1] if top_in else fc[F_TOP0], 1.0)
                        m = _put(fidx, fval, m, fc[F_INTEREST], math.log1p(own))
                        m = _put(fidx, fval, m, _log2_bucket(tabs, last_b, T_INTEREST, own), 1.0)
                if not i_exists:
                    m = _put(fidx, fval, m, fc[F_ITEM_NEW], 1.0)
                else:
                    at = ts if ts > xf[it, I_LAST] else xf[it, I_LAST]
                    pop = xf[it, I_POP] * two ** (-(at - xf[it, I_ANCHOR]) / h_c)
                    m = _put(fidx, fval, m, fc[F_ITEM_POP], math.log1p(pop))
                    m = _put(fidx, fval, m, _log2_bucket(tabs, last_b, T_ITEM_POP, pop), 1.0)
                    if xi[it, I_VN]:
                        b = _bucket(tabs, last_b, T_ITEM_VALUE, 2 * xf[it, I_VSUM] / xi[it, I_VN])
                        m = _put(fidx, fval, m, b, 1.0)
                n_shared = m
            # task features (FeatureBuilder.task_features)
            m = n_shared
            if key >= 0 and p_exists:
                name = ko_item[t, key] if task_by_item[t] else ko_topic[t, key]
                j = _key_slot(okey, olen, u, name)
                packed = oval[u, j] if j >= 0 else 0
                m = _rate_features(
                    fidx, fval, m, packed >> KEY_SHIFT, packed & KEY_EXAMPLES, fp, fc[F_KEY_RATE],
                    tabs, last_b, T_KEY_RATE, T_KEY_SEEN,
                )  # fmt: skip
            if not p_exists:
                m = _put(fidx, fval, m, fc[F_U_NEW_TASK], 1.0)
            else:
                m = _rate_features(
                    fidx, fval, m, upos[u, t], uex[u, t], fp, fc[F_U_RATE], tabs, last_b,
                    T_U_RATE, T_U_SEEN,
                )  # fmt: skip
            if not i_exists:
                m = _put(fidx, fval, m, fc[F_I_NEW_TASK], 1.0)
            else:
                m = _rate_features(
                    fidx, fval, m, xpos[it, t], xex[it, t], fp, fc[F_I_RATE], tabs, last_b,
                    T_I_RATE, T_I_SEEN,
                )  # fmt: skip
            if task_delayed[t]:
                # open a pending example
                slot = free[nfree[0] - 1]
                nfree[0] -= 1
                pd_task[slot] = t
                pd_user[slot] = ucode
                pd_key[slot] = key
                pd_item[slot] = icode
                pd_open[slot] = ts
                pd_dl[slot] = ts + task_window[t]
                pd_conv[slot] = False
                pd_flen[slot] = m
                for j in range(m):
                    pd_fidx[slot, j] = fidx[j]
                    pd_fval[slot, j] = fval[j]
                created[t, n_created[t]] = slot
                n_created[t] += 1
                k = _add_op(
                    t,
                    PREDICT,
                    fidx,
                    fval,
                    0,
                    m,
                    0.0,
                    op_kind,
                    op_start,
                    op_idx,
                    op_val,
                    op_y,
                    n_ops,
                )
                n_rec = _add_record(recs, rec_ts, rec_label, n_rec, R_OPENED, t, k, slot, ts, False)
                if pd_dl[slot] < watermark:
                    # a late exposure whose window has already closed: learned at once
                    _add_op(
                        t,
                        LEARN,
                        fidx,
                        fval,
                        0,
                        m,
                        0.0,
                        op_kind,
                        op_start,
                        op_idx,
                        op_val,
                        op_y,
                        n_ops,
                    )
                    n_rec = _add_record(
                        recs, rec_ts, rec_label, n_rec, R_RESOLVED, t, -1, slot, ts, False
                    )
                    examples += 1
                    if p_exists:
                        tick = _count(uex, upos, u, t, False, u_first, tick)
                        name = ko_item[t, key] if task_by_item[t] else ko_topic[t, key]
                        _record_key_outcome(okey, oval, olen, u, name, False, room)
                    if i_exists:
                        tick = _count(xex, xpos, it, t, False, x_first, tick)
                        xtouched[it] = True
                    freed[n_freed] = slot
                    n_freed += 1
                else:
                    waiting[(ucode * n_tasks + t) * keyspace + key] = slot
                    _heap_push(
                        heap,
                        hlen,
                        t,
                        slot,
                        pd_dl,
                        pd_open,
                        pd_user,
                        pd_key,
                        user_rank,
                        key_rank_item if task_by_item[t] else key_rank_topic,
                    )
            else:
                k = _add_op(
                    t,
                    PREDICT_LEARN,
                    fidx,
                    fval,
                    0,
                    m,
                    1.0 if label else 0.0,
                    op_kind,
                    op_start,
                    op_idx,
                    op_val,
                    op_y,
                    n_ops,
                )
                n_rec = _add_record(recs, rec_ts, rec_label, n_rec, R_IMMEDIATE, t, k, u, ts, label)
                examples += 1
        # the profile update (ProfileUpdater.apply)
        if not p_exists:
            pf[u, P_ANCHOR] = ts
            pf[u, P_FIRST] = ts
            pf[u, P_LAST] = ts
            pi[u, P_EXISTS] = 1
        anchor = pf[u, P_ANCHOR]
        if (ts - anchor) / h_min > REBASE_AFTER:
            f_c = two ** (-(ts - anchor) / h_c)
            f_i = two ** (-(ts - anchor) / h_i)
            for q in range(tlen[u]):
                dec[u, tord[u, q]] *= f_c
            for q in range(il[u]):
                iv[u, q] *= f_i
            anchor = ts
            pf[u, P_ANCHOR] = ts
        n0 = pi[u, P_N]
        pi[u, P_N] = n0 + 1
        if n0 == 0 or ts < pf[u, P_FIRST]:
            pf[u, P_FIRST] = ts
        if n0 == 0 or ts > pf[u, P_LAST]:
            pf[u, P_LAST] = ts
        if cnt[u, kind] == 0:
            tord[u, tlen[u]] = kind
            tlen[u] += 1
        cnt[u, kind] += 1
        dec[u, kind] += two ** ((ts - anchor) / h_c)
        monetary = type_monetary[kind]
        if has_value:
            if monetary:
                pf[u, P_MONETARY] += value
            else:
                pf[u, P_VSUM] += value
                pi[u, P_VN] += 1
        if monetary:
            pi[u, P_PURCHASES] += 1
            lp = pf[u, P_LASTPUR]
            if math.isnan(lp) or ts > lp:
                pf[u, P_LASTPUR] = ts
            if has_value:
                _add_spend(sday, scents, slen, u, int(ts // DAY), int(np.rint(value * 100)))
        if t1 > t0:
            weight = type_weight[kind]
            if weight != 0.0:
                w = weight * two ** ((ts - anchor) / h_i)
                for q in range(t0, t1):
                    tc = tp_code[q]
                    if track and not topic_track[tc]:
                        continue
                    found = False
                    for r in range(il[u]):
                        if ik[u, r] == tc:
                            iv[u, r] += w
                            found = True
                            break
                    if not found:
                        r = il[u]
                        ik[u, r] = tc
                        iv[u, r] = w
                        il[u] = r + 1
                while il[u] > top_k:
                    # keep the top K: drop the smallest (of equals, the earliest inserted), as
                    # deleting the first of a stable ascending sort does
                    n_int = il[u]
                    low = 0
                    for q in range(1, n_int):
                        if iv[u, q] < iv[u, low]:
                            low = q
                    for q in range(low, n_int - 1):
                        ik[u, q] = ik[u, q + 1]
                        iv[u, q] = iv[u, q + 1]
                    il[u] = n_int - 1
        _add_recent(
            rts, rty, rit, rva, rlen, u, ts, kind, icode, value, recent, type_rank, item_rank
        )
        # a new item, the immediate outcomes, then the item statistics (Core._count_item)
        if it >= 0 and not i_exists:
            xf[it, I_ANCHOR] = ts
            xf[it, I_LAST] = -np.inf
            xi[it, I_EXISTS] = 1
        for t in range(n_tasks):
            if labels[t] < 0:
                continue
            label = labels[t] == 1
            labels[t] = -1
            tick = _count(uex, upos, u, t, label, u_first, tick)
            if it >= 0:
                tick = _count(xex, xpos, it, t, label, x_first, tick)
        utouched[u] = True
        if it >= 0:
            a = xf[it, I_ANCHOR]
            if (ts - a) / h_c > REBASE_AFTER:
                xf[it, I_POP] *= two ** (-(ts - a) / h_c)
                xf[it, I_ANCHOR] = ts
                a = ts
            xi[it, I_N] += 1
            if xi[it, I_CAT] < 0:
                xi[it, I_CAT] = ev_cat[e]
            if ts > xf[it, I_LAST]:
                xf[it, I_LAST] = ts
            xf[it, I_POP] += two ** ((ts - a) / h_c)
            if has_value:
                xf[it, I_VSUM] += value
                xi[it, I_VN] += 1
            xtouched[it] = True
        applied += 1
    out[0] = applied
    out[1] = examples
    out[2] = n_rec
    out[3] = n_freed
    fp[FP_WATERMARK] = watermark
    ip[IP_TICK] = tick


@numba.njit(cache=True, nogil=True)
def push_all(heap, hlen, t, slots, pd_dl, pd_open, pd_user, pd_key, user_rank, key_rank):  # type: ignore[no-untyped-def]
    """Push the pending examples in ``slots`` onto task ``t``'s heap."""
    for s in slots:
        _heap_push(heap, hlen, t, s, pd_dl, pd_open, pd_user, pd_key, user_rank, key_rank)

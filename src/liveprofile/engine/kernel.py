"""The compiled step: the per-event work of :class:`~liveprofile.engine.step.PythonStep` on arrays.

:mod:`liveprofile.engine.compiled` lays a batch out as the named records of
:mod:`liveprofile.engine.records` (events, codes, tasks, parameters, the profiles and item
statistics they touch, the open pending examples, the model operations and outputs) and calls
:func:`run`, which does for every event, in order, what the Python step does: advance the
watermark and close the pending examples it makes due, resolve conversions, build the features
from the profile *before* the event (:mod:`liveprofile.engine.featurize`), open exposures, then
update the profile and the item statistics (:mod:`liveprofile.engine.rowops`). It emits the same
model operations in the same order, so the learner, and every float it computes, is the same as
with the Python step, which stays the reference (``tests/test_compiled.py``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from liveprofile.engine import layout as L
from liveprofile.engine.featurize import shared_features, task_features
from liveprofile.engine.rowops import (
    add_recent,
    add_spend,
    count,
    heap_pop,
    heap_push,
    record_key_outcome,
)

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def run(ev, codes, tasks, params, users, items, pool, ops, out):  # type: ignore[no-untyped-def]
    """Apply the batch ``ev``; ``out.res`` gets (applied, examples, records, freed slots),
    ``params.fp[FP_WATERMARK]`` the new watermark and ``params.ip[IP_TICK]`` the next tick."""
    n_tasks = tasks.delayed.shape[0]
    # this event's label per immediate task (-1: none), counted once the profile is updated
    labels = np.full(n_tasks, -1, np.int8)
    fp, res = params.fp, out.res
    for e in range(ev.ok.shape[0]):
        if not ev.ok[e]:
            continue
        ts = ev.ts[e]
        if ts > fp[L.FP_WATERMARK]:
            fp[L.FP_WATERMARK] = ts
            _close_due(codes, tasks, params, users, items, pool, ops, out)
        u, it, kind = ev.urow[e], ev.irow[e], ev.type[e]
        n_shared = -1  # features not built yet
        for t in range(n_tasks):
            key = -1
            label = False
            if tasks.delayed[t]:
                if tasks.conv[t, kind]:
                    _convert(ev, e, tasks, pool, out, t)
                if not tasks.on[t, kind]:
                    continue
                key = ev.icode[e] if tasks.by_item[t] else ev.cat[e]
                if key < 0 or _wkey(ev.ucode[e], n_tasks, t, key) in pool.waiting:
                    continue
            else:
                if not tasks.on[t, kind]:
                    continue
                if tasks.has_pos[t]:
                    label = tasks.pos[t, kind]
                else:
                    value = ev.value[e]
                    label = not math.isnan(value) and value >= tasks.threshold[t]
                labels[t] = 1 if label else 0
            if n_shared < 0:
                n_shared = shared_features(ev, e, codes, params, users, items, ops)
            m = task_features(tasks, params, users, items, ops, t, key, u, it, n_shared)
            if key >= 0:
                _open(ev, e, codes, tasks, params, users, items, pool, ops, out, t, key, m)
            else:
                k = _add_op(
                    ops, t, L.PREDICT_LEARN, ops.cur_idx, ops.cur_val, m, 1.0 if label else 0.0
                )
                _add_record(out, L.R_IMMEDIATE, t, k, u, ts, label)
                res[1] += 1
        _update_profile(ev, e, codes, params, users)
        # a new item, the immediate outcomes, then the item statistics (Core._count_item)
        if it >= 0 and not items.xi[it, L.I_EXISTS]:
            items.xf[it, L.I_ANCHOR] = ts
            items.xf[it, L.I_LAST] = -np.inf
            items.xi[it, L.I_EXISTS] = 1
        tick = params.ip[L.IP_TICK]
        for t in range(n_tasks):
            if labels[t] < 0:
                continue
            label = labels[t] == 1
            labels[t] = -1
            tick = count(users, u, t, label, tick)
            if it >= 0:
                tick = count(items, it, t, label, tick)
        params.ip[L.IP_TICK] = tick
        users.touched[u] = True
        if it >= 0:
            _count_item(ev, e, params, items)
        res[0] += 1


@_jit
def _wkey(ucode, n_tasks, t, key):  # type: ignore[no-untyped-def]
    """The key of a waiting example (see ``layout.KEYSPACE``)."""
    return (ucode * n_tasks + t) * L.KEYSPACE + key


@_jit
def _add_op(ops, t, kind, fidx, fval, m, y):  # type: ignore[no-untyped-def]
    """Append one model operation of task ``t`` with features ``fidx/fval[:m]``; returns its
    position."""
    k = ops.n[t]
    s = ops.start[t, k]
    for j in range(m):
        ops.idx[t, s] = fidx[j]
        ops.val[t, s] = fval[j]
        s += 1
    ops.kind[t, k] = kind
    ops.y[t, k] = y
    ops.start[t, k + 1] = s
    ops.n[t] = k + 1
    return k


@_jit
def _add_record(out, kind, t, k, ref, ts, label):  # type: ignore[no-untyped-def]
    """Append a record (kind, task, operation, user row or slot, event time, label)."""
    n = out.res[2]
    out.recs[n, 0] = kind
    out.recs[n, 1] = t
    out.recs[n, 2] = k
    out.recs[n, 3] = ref
    out.rec_ts[n] = ts
    out.rec_label[n] = label
    out.res[2] = n + 1


@_jit
def _free(out, slot):  # type: ignore[no-untyped-def]
    out.freed[out.res[3]] = slot
    out.res[3] += 1


@_jit
def _close_due(codes, tasks, params, users, items, pool, ops, out):  # type: ignore[no-untyped-def]
    """Learn the pending examples whose window closed before the watermark, in deadline order
    per task, and count their outcomes on their user and item (``PythonStep._resolve``)."""
    watermark = params.fp[L.FP_WATERMARK]
    n_tasks = tasks.delayed.shape[0]
    for t in range(n_tasks):
        if not tasks.delayed[t]:
            continue
        key_rank = codes.item_rank if tasks.by_item[t] else codes.topic_rank
        while pool.hlen[t] > 0 and pool.deadline[pool.heap[t, 0]] < watermark:
            slot = heap_pop(pool, t, codes.user_rank, key_rank)
            label = pool.conv[slot]
            _add_op(
                ops,
                t,
                L.LEARN,
                pool.fidx[slot],
                pool.fval[slot],
                pool.flen[slot],
                1.0 if label else 0.0,
            )
            wkey = _wkey(pool.user[slot], n_tasks, t, pool.key[slot])
            if wkey in pool.waiting and pool.waiting[wkey] == slot:
                del pool.waiting[wkey]
            _add_record(out, L.R_RESOLVED, t, -1, slot, pool.open_ts[slot], label)
            out.res[1] += 1
            key = pool.key[slot]
            name = tasks.ko_item[t, key] if tasks.by_item[t] else tasks.ko_topic[t, key]
            _outcome(params, users, items, codes.user_row[pool.user[slot]], t, label, name)
            if pool.item[slot] >= 0:
                _item_outcome(params, items, codes.item_row[pool.item[slot]], t, label)
            _free(out, slot)


@_jit
def _outcome(params, users, items, u, t, label, name):  # type: ignore[no-untyped-def]
    """A delayed outcome counted on user row ``u`` (if it has a profile) and its key."""
    if u >= 0 and users.pi[u, L.P_EXISTS]:
        params.ip[L.IP_TICK] = count(users, u, t, label, params.ip[L.IP_TICK])
        record_key_outcome(users, u, name, label, params.ip[L.IP_KEY_ROOM])
        users.touched[u] = True


@_jit
def _item_outcome(params, items, it, t, label):  # type: ignore[no-untyped-def]
    """A delayed outcome counted on item row ``it`` (if held and known)."""
    if it >= 0 and items.xi[it, L.I_EXISTS]:
        params.ip[L.IP_TICK] = count(items, it, t, label, params.ip[L.IP_TICK])
        items.touched[it] = True


@_jit
def _convert(ev, e, tasks, pool, out, t):  # type: ignore[no-untyped-def]
    """Mark the waiting example of task ``t`` that event ``e`` converts (``TaskState.convert``)."""
    key = ev.icode[e] if tasks.by_item[t] else ev.cat[e]
    if key < 0:
        return
    wkey = _wkey(ev.ucode[e], tasks.delayed.shape[0], t, key)
    if wkey in pool.waiting:
        slot = pool.waiting[wkey]
        if pool.open_ts[slot] < ev.ts[e] <= pool.deadline[slot]:
            pool.conv[slot] = True
            del pool.waiting[wkey]
            out.converted[t, out.n_converted[t]] = slot
            out.n_converted[t] += 1


@_jit
def _open(ev, e, codes, tasks, params, users, items, pool, ops, out, t, key, m):  # type: ignore[no-untyped-def]
    """Open a pending example of task ``t`` on event ``e`` with the ``m`` features built,
    predicted now; one whose window has already closed in event time is learned at once."""
    ts, ucode, u, it = ev.ts[e], ev.ucode[e], ev.urow[e], ev.irow[e]
    slot = pool.free[pool.nfree[0] - 1]
    pool.nfree[0] -= 1
    pool.task[slot] = t
    pool.user[slot] = ucode
    pool.key[slot] = key
    pool.item[slot] = ev.icode[e]
    pool.open_ts[slot] = ts
    pool.deadline[slot] = ts + tasks.window[t]
    pool.conv[slot] = False
    pool.flen[slot] = m
    for j in range(m):
        pool.fidx[slot, j] = ops.cur_idx[j]
        pool.fval[slot, j] = ops.cur_val[j]
    out.created[t, out.n_created[t]] = slot
    out.n_created[t] += 1
    k = _add_op(ops, t, L.PREDICT, ops.cur_idx, ops.cur_val, m, 0.0)
    _add_record(out, L.R_OPENED, t, k, slot, ts, False)
    if pool.deadline[slot] < params.fp[L.FP_WATERMARK]:
        # a late exposure whose window has already closed: learned at once
        _add_op(ops, t, L.LEARN, ops.cur_idx, ops.cur_val, m, 0.0)
        _add_record(out, L.R_RESOLVED, t, -1, slot, ts, False)
        out.res[1] += 1
        if users.pi[u, L.P_EXISTS]:
            params.ip[L.IP_TICK] = count(users, u, t, False, params.ip[L.IP_TICK])
            name = tasks.ko_item[t, key] if tasks.by_item[t] else tasks.ko_topic[t, key]
            record_key_outcome(users, u, name, False, params.ip[L.IP_KEY_ROOM])
        _item_outcome(params, items, it, t, False)
        _free(out, slot)
    else:
        pool.waiting[_wkey(ucode, tasks.delayed.shape[0], t, key)] = slot
        key_rank = codes.item_rank if tasks.by_item[t] else codes.topic_rank
        heap_push(pool, t, slot, codes.user_rank, key_rank)


@_jit
def _update_profile(ev, e, codes, params, users):  # type: ignore[no-untyped-def]
    """``ProfileUpdater.apply``: counts, decayed counts, value, spend, interests, recent."""
    fp, ip = params.fp, params.ip
    pf, pi, dec, tord, tlen = users.pf, users.pi, users.dec, users.tord, users.tlen
    ik, iv, il = users.ik, users.iv, users.il
    u, ts, kind, value = ev.urow[e], ev.ts[e], ev.type[e], ev.value[e]
    two, h_c, h_i = fp[L.FP_TWO], fp[L.FP_H_COUNTERS], fp[L.FP_H_INTERESTS]
    has_value = not math.isnan(value)
    if not pi[u, L.P_EXISTS]:
        pf[u, L.P_ANCHOR] = ts
        pf[u, L.P_FIRST] = ts
        pf[u, L.P_LAST] = ts
        pi[u, L.P_EXISTS] = 1
    anchor = pf[u, L.P_ANCHOR]
    if (ts - anchor) / fp[L.FP_H_MIN] > L.REBASE_AFTER:
        f_c = two ** (-(ts - anchor) / h_c)
        f_i = two ** (-(ts - anchor) / h_i)
        for q in range(tlen[u]):
            dec[u, tord[u, q]] *= f_c
        for q in range(il[u]):
            iv[u, q] *= f_i
        anchor = ts
        pf[u, L.P_ANCHOR] = ts
    n0 = pi[u, L.P_N]
    pi[u, L.P_N] = n0 + 1
    if n0 == 0 or ts < pf[u, L.P_FIRST]:
        pf[u, L.P_FIRST] = ts
    if n0 == 0 or ts > pf[u, L.P_LAST]:
        pf[u, L.P_LAST] = ts
    if users.cnt[u, kind] == 0:
        tord[u, tlen[u]] = kind
        tlen[u] += 1
    users.cnt[u, kind] += 1
    dec[u, kind] += two ** ((ts - anchor) / h_c)
    monetary = codes.type_monetary[kind]
    if has_value:
        if monetary:
            pf[u, L.P_MONETARY] += value
        else:
            pf[u, L.P_VSUM] += value
            pi[u, L.P_VN] += 1
    if monetary:
        pi[u, L.P_PURCHASES] += 1
        lp = pf[u, L.P_LASTPUR]
        if math.isnan(lp) or ts > lp:
            pf[u, L.P_LASTPUR] = ts
        if has_value:
            add_spend(users, u, int(ts // L.DAY), int(np.rint(value * 100)))
    t0, t1 = ev.tp_start[e], ev.tp_start[e + 1]
    weight = codes.type_weight[kind]
    if t1 > t0 and weight != 0.0:
        w = weight * two ** ((ts - anchor) / h_i)
        for q in range(t0, t1):
            tc = ev.tp_code[q]
            if ip[L.IP_TRACK] != 0 and not codes.topic_track[tc]:
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
        while il[u] > ip[L.IP_TOP_K]:
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
    add_recent(users, u, ts, kind, ev.icode[e], value, ip[L.IP_RECENT], codes)


@_jit
def _count_item(ev, e, params, items):  # type: ignore[no-untyped-def]
    """``PythonStep._count_item``: the item's count, category, last time, popularity, value."""
    xf, xi = items.xf, items.xi
    it, ts, value = ev.irow[e], ev.ts[e], ev.value[e]
    two, h_c = params.fp[L.FP_TWO], params.fp[L.FP_H_COUNTERS]
    a = xf[it, L.I_ANCHOR]
    if (ts - a) / h_c > L.REBASE_AFTER:
        xf[it, L.I_POP] *= two ** (-(ts - a) / h_c)
        xf[it, L.I_ANCHOR] = ts
        a = ts
    xi[it, L.I_N] += 1
    if xi[it, L.I_CAT] < 0:
        xi[it, L.I_CAT] = ev.cat[e]
    if ts > xf[it, L.I_LAST]:
        xf[it, L.I_LAST] = ts
    xf[it, L.I_POP] += two ** ((ts - a) / h_c)
    if not math.isnan(value):
        xf[it, L.I_VSUM] += value
        xi[it, L.I_VN] += 1
    items.touched[it] = True

"""The step's per-event work, on arrays: the one implementation of what an event does.

:mod:`liveprofile.engine.compiled` lays a batch out as the named records of
:mod:`liveprofile.engine.records` (events, codes, tasks, parameters, the profiles and item
statistics they touch, the open pending examples, the model operations and outputs) and calls
:func:`run`, which does for every event, in order: de-duplicated already, advance the
watermark and close the pending examples it makes due, resolve conversions, build the features
from the profile *before* the event (:mod:`liveprofile.engine.featurize`), open exposures, then
update the profile and the item statistics (:mod:`liveprofile.engine.rowops`). It emits the same
model operations of a batch per task, in the order of the events; the learners run them once
per batch, which gives the models and predictions of running them one by one. It runs compiled
(numba), or as plain Python under ``LIVEPROFILE_NO_JIT=1`` (:mod:`liveprofile.engine.jit`); its
properties are tested on it alone (``tests/test_engine_properties.py``) and on small cases
worked by hand (``tests/test_step_by_hand.py``).
"""

from __future__ import annotations

import math

import numpy as np

from liveprofile.engine import behaviour
from liveprofile.engine import layout as L
from liveprofile.engine.chains import (
    convert,
    insert,
    key_name,
    may_open,
    task_key,
    unlink,
)
from liveprofile.engine.featurize import shared_features, task_features
from liveprofile.engine.jit import jit as _jit
from liveprofile.engine.jit import leaf
from liveprofile.engine.rowops import (
    add_recent,
    add_spend,
    count,
    heap_pop,
    heap_push,
    keep_top,
    rebase_row,
    record_key_outcome,
)
from liveprofile.engine.rules import cents, decay_factor, forward_weight, needs_rebase, spend_day

#: the typed dict of waiting examples needs reference counting, so it is used in :func:`run`
#: only; the helpers, compiled without it (:data:`.jit.leaf`), work on arrays


@_jit
def run(ev, codes, tasks, params, users, items, pool, ops, out):  # type: ignore[no-untyped-def]
    """Apply the batch ``ev``; ``out.res`` gets (applied, examples, records, freed slots),
    ``params.fp[FP_WATERMARK]`` the new watermark and ``params.ip[IP_TICK]`` the next tick."""
    params_fp = params.fp
    out_res = out.res
    tasks_delayed = tasks.delayed
    ev_ts = ev.ts
    params_ip = params.ip
    users_touched = users.touched
    ev_ok = ev.ok
    ev_urow = ev.urow
    ev_irow = ev.irow
    ev_type = ev.type
    items_xf = items.xf
    items_xi = items.xi
    tasks_conv = tasks.conv
    tasks_has_pos = tasks.has_pos
    ops_cur_idx = ops.cur_idx
    ops_cur_val = ops.cur_val
    tasks_on = tasks.on
    pool_waiting = pool.waiting
    tasks_per_key = tasks.per_key
    tasks_pos = tasks.pos
    ev_value = ev.value
    ev_ucode = ev.ucode
    tasks_threshold = tasks.threshold
    tasks_reg = tasks.regression
    n_tasks = tasks_delayed.shape[0]
    # this event's label per immediate task (-1: none), counted once the profile is updated
    labels = np.full(n_tasks, -1, np.int8)
    fp, res = params_fp, out_res
    for e in range(ev_ok.shape[0]):
        if not ev_ok[e]:
            continue
        ts = ev_ts[e]
        if ts > fp[L.FP_WATERMARK]:
            # learn the pending examples whose window closed before the watermark, in deadline
            # order per task
            advance(codes, tasks, params, users, items, pool, ops, out, ts)
        u, it, kind = ev_urow[e], ev_irow[e], ev_type[e]
        n_shared = -1  # features not built yet
        for t in range(n_tasks):
            key = -1
            label = False
            if tasks_delayed[t]:
                if tasks_conv[t, kind]:  # mark the waiting examples this event converts
                    key = task_key(tasks, ev, e, t)
                    wkey = _wkey(ev_ucode[e], n_tasks, t, key)
                    if key >= 0 and wkey in pool_waiting:
                        done = out.n_converted[t]
                        convert(pool, out, t, pool_waiting[wkey], ts, ev_value[e], tasks_reg[t])
                        if tasks.feedback[t]:  # learned as negatives: now as positives
                            learn_converted(pool, ops, out, tasks, t, done, fp[L.FP_WATERMARK])
                if not tasks_on[t, kind]:
                    continue
                key = task_key(tasks, ev, e, t)
                if key < 0:
                    continue
                wkey = _wkey(ev_ucode[e], n_tasks, t, key)
                head = -1
                if wkey in pool_waiting:
                    head = pool_waiting[wkey]
                    if not may_open(pool, head, ts, tasks_per_key[t], tasks_reg[t]):
                        continue
            else:
                if not tasks_on[t, kind]:
                    continue
                if tasks_has_pos[t]:
                    label = tasks_pos[t, kind]
                else:
                    value = ev_value[e]
                    label = not math.isnan(value) and value >= tasks_threshold[t]
                labels[t] = 1 if label else 0
            if n_shared < 0:
                n_shared = shared_features(ev, e, codes, params, users, items, ops)
            m = task_features(tasks, params, users, items, ops, t, key, u, it, n_shared)
            if key >= 0:
                slot = _open(ev, e, codes, tasks, params, users, items, pool, ops, out, t, m)
                if slot >= 0:
                    pool_waiting[wkey] = insert(pool, head, slot)
            else:
                k = _add_op(
                    ops, t, L.PREDICT_LEARN, ops_cur_idx, ops_cur_val, m, 1.0 if label else 0.0
                )
                _add_record(out, L.R_IMMEDIATE, t, k, u, ts, label)
                res[1] += 1
        _update_profile(ev, e, codes, params, users)
        # a new item, the immediate outcomes, then the item statistics (Core._count_item)
        if it >= 0 and not items_xi[it, L.I_EXISTS]:
            items_xf[it, L.I_ANCHOR] = ts
            items_xf[it, L.I_LAST] = -np.inf
            items_xi[it, L.I_EXISTS] = 1
        tick = params_ip[L.IP_TICK]
        for t in range(n_tasks):
            if labels[t] < 0:
                continue
            label = labels[t] == 1
            labels[t] = -1
            tick = count(users, u, t, label, tick)
            if it >= 0:
                tick = count(items, it, t, label, tick)
        params_ip[L.IP_TICK] = tick
        users_touched[u] = True
        if it >= 0:
            _count_item(ev, e, params, items)
        res[0] += 1


@_jit
def advance(codes, tasks, params, users, items, pool, ops, out, ts):  # type: ignore[no-untyped-def]
    """Move the watermark to ``ts`` (if later) and learn the pending examples it makes due, as
    :func:`run` does at an event's start: the step calls it before the work on an event that
    the Python lifecycle does (an identity link, an erasure, an expiry)."""
    fp = params.fp
    if ts <= fp[L.FP_WATERMARK]:
        return
    fp[L.FP_WATERMARK] = ts
    tasks_delayed = tasks.delayed
    n_tasks = tasks_delayed.shape[0]
    pool_hlen, pool_heap, pool_deadline = pool.hlen, pool.heap, pool.deadline
    pool_waiting, pool_user, pool_key = pool.waiting, pool.user, pool.key
    pool_link = pool.link
    for t in range(n_tasks):
        if not tasks_delayed[t]:
            continue
        if tasks.wait[t] > 0.0:  # learned at the end of their wait (TaskState.learn_waited)
            learn_waited(codes, tasks, pool, ops, t, ts)
        while pool_hlen[t] > 0 and pool_deadline[pool_heap[t, 0]] < ts:
            slot = _learn_due(codes, tasks, params, users, items, pool, ops, out, t)
            wkey = _wkey(pool_user[slot], n_tasks, t, pool_key[slot])
            head = pool_waiting[wkey]
            rest = unlink(pool_link, head, slot)
            if rest < 0:
                del pool_waiting[wkey]
            elif rest != head:
                pool_waiting[wkey] = rest


@leaf
def _wkey(ucode, n_tasks, t, key):  # type: ignore[no-untyped-def]
    """The key of a waiting example (see ``layout.KEYSPACE``)."""
    return (ucode * n_tasks + t) * L.KEYSPACE + key


@leaf
def _add_op(ops, t, kind, fidx, fval, m, y):  # type: ignore[no-untyped-def]
    """Append one model operation of task ``t`` with features ``fidx/fval[:m]``; returns its
    position."""
    ops_n = ops.n
    ops_start = ops.start
    ops_kind = ops.kind
    ops_y = ops.y
    ops_idx = ops.idx
    ops_val = ops.val
    k = ops_n[t]
    s = ops_start[t, k]
    for j in range(m):
        ops_idx[t, s] = fidx[j]
        ops_val[t, s] = fval[j]
        s += 1
    ops_kind[t, k] = kind
    ops_y[t, k] = y
    ops_start[t, k + 1] = s
    ops_n[t] = k + 1
    return k


@leaf
def _add_record(out, kind, t, k, ref, ts, label):  # type: ignore[no-untyped-def]
    """Append a record (kind, task, operation, user row or slot, event time, label)."""
    out_res = out.res
    out_recs = out.recs
    out_rec_ts = out.rec_ts
    out_rec_label = out.rec_label
    n = out_res[2]
    out_recs[n, 0] = kind
    out_recs[n, 1] = t
    out_recs[n, 2] = k
    out_recs[n, 3] = ref
    out_rec_ts[n] = ts
    out_rec_label[n] = label
    out_res[2] = n + 1


@leaf
def learn_converted(pool, ops, out, tasks, t, done, watermark):  # type: ignore[no-untyped-def]
    """Learn as positives the examples of task ``t`` converted since ``out.n_converted[t]`` was
    ``done`` (latest exposure first, ``TaskState.convert_at``): all of them (fnc, fnw), or with
    ``feedback = "wait"`` those whose wait ended before ``watermark``."""
    out_converted = out.converted
    flags, wait = tasks.learn_flags[t], tasks.wait[t]
    for j in range(done, out.n_converted[t]):
        slot = out_converted[t, j]
        if pool.open_ts[slot] + wait < watermark:  # fnc, fnw: always (opened before it)
            _add_op(ops, t, L.LEARN | flags, pool.fidx[slot], pool.fval[slot], pool.flen[slot], 1.0)


@leaf
def learn_waited(codes, tasks, pool, ops, t, ts):  # type: ignore[no-untyped-def]
    """Learn, with the label known now, task ``t``'s examples whose wait ends before ``ts``,
    in the order the waits end: its heap (row ``n_tasks + t``) is ordered as the deadline
    heap, both by exposure time (end of wait and deadline add a constant to it)."""
    row = tasks.delayed.shape[0] + t
    wait = tasks.wait[t]
    ranks = codes.item_rank if tasks.by_item[t] else codes.topic_rank
    if tasks.by_user[t]:
        ranks = codes.user_rank
    while pool.hlen[row] > 0 and pool.open_ts[pool.heap[row, 0]] + wait < ts:
        slot = heap_pop(pool, row, codes.user_rank, ranks)
        y = 1.0 if pool.conv[slot] else 0.0
        _add_op(ops, t, L.LEARN, pool.fidx[slot], pool.fval[slot], pool.flen[slot], y)


@leaf
def _free(out, slot):  # type: ignore[no-untyped-def]
    out_freed = out.freed
    out_res = out.res
    out_freed[out_res[3]] = slot
    out_res[3] += 1


@leaf
def _learn_due(codes, tasks, params, users, items, pool, ops, out, t):  # type: ignore[no-untyped-def]
    """Learn task ``t``'s pending example that is due first and count its outcome on its user
    and item; returns its slot, for the caller to drop from the waiting ones."""
    pool_conv = pool.conv
    pool_key = pool.key
    pool_user = pool.user
    pool_item = pool.item
    ranks = codes.item_rank if tasks.by_item[t] else codes.topic_rank
    if tasks.by_user[t]:
        ranks = codes.user_rank
    slot = heap_pop(pool, t, codes.user_rank, ranks)
    label = pool_conv[slot]
    y = pool.total[slot] if tasks.regression[t] else (1.0 if label else 0.0)
    if not tasks.feedback[t]:  # else learned when exposed (and when converted)
        _add_op(ops, t, L.LEARN, pool.fidx[slot], pool.fval[slot], pool.flen[slot], y)
    _add_record(out, L.R_RESOLVED, t, -1, slot, pool.open_ts[slot], label)
    out.res[1] += 1
    key = pool_key[slot]
    name = key_name(tasks, t, key)
    # counted on the profile the example's user is an alias of, if any
    _outcome(params, users, items, codes.owner_row[pool_user[slot]], t, label, name)
    if pool_item[slot] >= 0:
        _item_outcome(params, items, codes.item_row[pool_item[slot]], t, label)
    _free(out, slot)
    return slot


@leaf
def _outcome(params, users, items, u, t, label, name):  # type: ignore[no-untyped-def]
    """A delayed outcome counted on user row ``u`` (if it has a profile) and its key."""
    users_pi = users.pi
    params_ip = params.ip
    users_touched = users.touched
    if u >= 0 and users_pi[u, L.P_EXISTS]:
        params_ip[L.IP_TICK] = count(users, u, t, label, params_ip[L.IP_TICK])
        record_key_outcome(users, u, name, label, params_ip[L.IP_KEY_ROOM])
        users_touched[u] = True


@leaf
def _item_outcome(params, items, it, t, label):  # type: ignore[no-untyped-def]
    """A delayed outcome counted on item row ``it`` (if held and known)."""
    items_xi = items.xi
    params_ip = params.ip
    items_touched = items.touched
    if it >= 0 and items_xi[it, L.I_EXISTS]:
        params_ip[L.IP_TICK] = count(items, it, t, label, params_ip[L.IP_TICK])
        items_touched[it] = True


@leaf
def _open(ev, e, codes, tasks, params, users, items, pool, ops, out, t, m):  # type: ignore[no-untyped-def]
    """Open a pending example of (delayed) task ``t`` on event ``e`` with the ``m`` features
    built, predicted now; one whose window has already closed in event time is learned at once.
    Returns the slot, for the caller to note as waiting, or -1 (learned at once)."""
    pool_free = pool.free
    pool_nfree = pool.nfree
    pool_task = pool.task
    pool_user = pool.user
    pool_key = pool.key
    pool_item = pool.item
    ev_icode = ev.icode
    pool_open_ts = pool.open_ts
    pool_deadline = pool.deadline
    pool_conv = pool.conv
    pool_flen = pool.flen
    out_created = out.created
    out_n_created = out.n_created
    ops_cur_idx = ops.cur_idx
    ops_cur_val = ops.cur_val
    ev_ts = ev.ts
    ev_ucode = ev.ucode
    ev_urow = ev.urow
    ev_irow = ev.irow
    tasks_window = tasks.window
    pool_fidx = pool.fidx
    pool_fval = pool.fval
    params_fp = params.fp
    out_res = out.res
    users_pi = users.pi
    codes_user_rank = codes.user_rank
    params_ip = params.ip
    ts, ucode, u, it = ev_ts[e], ev_ucode[e], ev_urow[e], ev_irow[e]
    key = task_key(tasks, ev, e, t)
    slot = pool_free[pool_nfree[0] - 1]
    pool_nfree[0] -= 1
    pool_task[slot] = t
    pool_user[slot] = ucode
    pool_key[slot] = key
    pool_item[slot] = ev_icode[e]
    pool_open_ts[slot] = ts
    pool_deadline[slot] = ts + tasks_window[t]
    pool_conv[slot] = False
    pool.total[slot] = 0.0
    pool_flen[slot] = m
    for j in range(m):
        pool_fidx[slot, j] = ops_cur_idx[j]
        pool_fval[slot, j] = ops_cur_val[j]
    out_created[t, out_n_created[t]] = slot
    out_n_created[t] += 1
    wait = tasks.wait[t]
    at_once = tasks.feedback[t] > 0 and wait == 0.0  # fnc, fnw: learned as a negative now
    kind = (L.PREDICT_LEARN | tasks.learn_flags[t]) if at_once else L.PREDICT
    k = _add_op(ops, t, kind, ops_cur_idx, ops_cur_val, m, 0.0)
    _add_record(out, L.R_OPENED, t, k, slot, ts, False)
    waited = wait > 0.0 and ts + wait < params_fp[L.FP_WATERMARK]  # a late exposure's wait
    if waited and pool_deadline[slot] >= params_fp[L.FP_WATERMARK]:
        _add_op(ops, t, L.LEARN, ops_cur_idx, ops_cur_val, m, 0.0)
    if pool_deadline[slot] < params_fp[L.FP_WATERMARK]:
        # a late exposure whose window has already closed: learned at once
        if not at_once:
            _add_op(ops, t, L.LEARN, ops_cur_idx, ops_cur_val, m, 0.0)
        _add_record(out, L.R_RESOLVED, t, -1, slot, ts, False)
        out_res[1] += 1
        if users_pi[u, L.P_EXISTS]:
            params_ip[L.IP_TICK] = count(users, u, t, False, params_ip[L.IP_TICK])
            name = key_name(tasks, t, key)
            record_key_outcome(users, u, name, False, params_ip[L.IP_KEY_ROOM])
        _item_outcome(params, items, it, t, False)
        _free(out, slot)
        return -1
    ranks = codes.item_rank if tasks.by_item[t] else codes.topic_rank
    if tasks.by_user[t]:
        ranks = codes_user_rank
    heap_push(pool, t, slot, codes_user_rank, ranks)
    if wait > 0.0 and not waited:
        heap_push(pool, tasks.delayed.shape[0] + t, slot, codes_user_rank, ranks)
    return slot


@leaf
def _update_profile(ev, e, codes, params, users):  # type: ignore[no-untyped-def]
    """One event on its profile row: counts, decayed counts, value, spend, interests, recent."""
    params_fp = params.fp
    params_ip = params.ip
    users_pf = users.pf
    users_pi = users.pi
    users_dec = users.dec
    users_tord = users.tord
    users_tlen = users.tlen
    users_ik = users.ik
    users_iv = users.iv
    users_il = users.il
    users_cnt = users.cnt
    codes_type_monetary = codes.type_monetary
    codes_type_weight = codes.type_weight
    ev_urow = ev.urow
    ev_ts = ev.ts
    ev_type = ev.type
    ev_value = ev.value
    ev_tp_start = ev.tp_start
    ev_icode = ev.icode
    ev_tp_code = ev.tp_code
    codes_topic_track = codes.topic_track
    fp, ip = params_fp, params_ip
    pf, pi, dec, tord, tlen = users_pf, users_pi, users_dec, users_tord, users_tlen
    ik, iv, il = users_ik, users_iv, users_il
    u, ts, kind, value = ev_urow[e], ev_ts[e], ev_type[e], ev_value[e]
    two, h_c, h_i = fp[L.FP_TWO], fp[L.FP_H_COUNTERS], fp[L.FP_H_INTERESTS]
    has_value = not math.isnan(value)
    if not pi[u, L.P_EXISTS]:
        pf[u, L.P_ANCHOR] = ts
        pf[u, L.P_FIRST] = ts
        pf[u, L.P_LAST] = ts
        pi[u, L.P_EXISTS] = 1
    anchor = pf[u, L.P_ANCHOR]
    if needs_rebase(ts, anchor, fp[L.FP_H_MIN]):
        rebase_row(users, u, ts, fp)
        anchor = ts
    n0 = pi[u, L.P_N]
    pi[u, L.P_N] = n0 + 1
    if n0 == 0 or ts < pf[u, L.P_FIRST]:
        pf[u, L.P_FIRST] = ts
    if n0 == 0 or ts > pf[u, L.P_LAST]:
        pf[u, L.P_LAST] = ts
    if users_cnt[u, kind] == 0:
        tord[u, tlen[u]] = kind
        tlen[u] += 1
    users_cnt[u, kind] += 1
    w_c = forward_weight(ts, anchor, h_c, two)
    dec[u, kind] += w_c
    behaviour.apply_event(ev, e, codes, params, users, w_c)
    monetary = codes_type_monetary[kind]
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
            add_spend(users, u, spend_day(ts), cents(value))
    t0, t1 = ev_tp_start[e], ev_tp_start[e + 1]
    weight = codes_type_weight[kind]
    if t1 > t0 and weight != 0.0:
        w = weight * forward_weight(ts, anchor, h_i, two)
        for q in range(t0, t1):
            tc = ev_tp_code[q]
            if ip[L.IP_TRACK] != 0 and not codes_topic_track[tc]:
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
        keep_top(users, u, ip[L.IP_TOP_K])
    add_recent(users, u, ts, kind, ev_icode[e], value, ip[L.IP_RECENT], codes)


@leaf
def _count_item(ev, e, params, items):  # type: ignore[no-untyped-def]
    """Count an event on its item: count, category, last time, decayed popularity, value."""
    items_xf = items.xf
    items_xi = items.xi
    items_touched = items.touched
    ev_irow = ev.irow
    ev_ts = ev.ts
    ev_value = ev.value
    params_fp = params.fp
    ev_cat = ev.cat
    xf, xi = items_xf, items_xi
    it, ts, value = ev_irow[e], ev_ts[e], ev_value[e]
    two, h_c = params_fp[L.FP_TWO], params_fp[L.FP_H_COUNTERS]
    a = xf[it, L.I_ANCHOR]
    if needs_rebase(ts, a, h_c):
        xf[it, L.I_POP] *= decay_factor(ts, a, h_c, two)
        xf[it, L.I_ANCHOR] = ts
        a = ts
    xi[it, L.I_N] += 1
    if xi[it, L.I_CAT] < 0:
        xi[it, L.I_CAT] = ev_cat[e]
    if ts > xf[it, L.I_LAST]:
        xf[it, L.I_LAST] = ts
    xf[it, L.I_POP] += forward_weight(ts, a, h_c, two)
    if not math.isnan(value):
        xf[it, L.I_VSUM] += value
        xi[it, L.I_VN] += 1
    items_touched[it] = True

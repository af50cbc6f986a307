"""Compiled feature building: :class:`~liveprofile.features.hashing.FeatureBuilder` on rows.

:func:`shared_features` is ``FeatureBuilder.build`` and :func:`task_features` is
``FeatureBuilder.task_features``, over the records of :mod:`liveprofile.engine.records`, with
the indices of :func:`liveprofile.engine.layout.feature_tables`. They write the features of one
example into ``ops.cur_idx`` / ``ops.cur_val`` and return how many there are; every float is
computed as the Python builder computes it, in the same order, and the rules both follow
(buckets, decay, the cross hash, time of day, shrunk rates) are the builder's own functions,
compiled (:mod:`liveprofile.engine.rules`).
"""

from __future__ import annotations

import math

from liveprofile.engine import layout as L
from liveprofile.engine.behaviour import behaviour_features
from liveprofile.engine.chains import key_name
from liveprofile.engine.jit import leaf
from liveprofile.engine.rowops import key_slot
from liveprofile.engine.rules import (
    cross_index,
    day_parts,
    decay_factor,
    decile_in,
    key_outcome_counts,
    log2_in,
    rounded_in,
    shrunk_rate,
)


@leaf
def _put(idx, val, m, i, v):  # type: ignore[no-untyped-def]
    """Set feature ``m`` of the example being built; returns the next position."""
    idx[m] = i
    val[m] = v
    return m + 1


@leaf
def _rate(ops, m, positives, n, params, f_rate, rate_row, seen_row):  # type: ignore[no-untyped-def]
    """A positive rate shrunk toward the prior: its distance from the prior, its decile bucket
    and a bucket of how many examples it rests on (FeatureBuilder.task_features)."""
    params_fp = params.fp
    params_fc = params.fc
    ops_cur_idx = ops.cur_idx
    ops_cur_val = ops.cur_val
    prior, strength = params_fp[L.FP_PRIOR], params_fp[L.FP_STRENGTH]
    rate = shrunk_rate(positives, n, prior, strength)
    m = _put(ops_cur_idx, ops_cur_val, m, params_fc[f_rate], rate - prior)
    m = _put(ops_cur_idx, ops_cur_val, m, decile_in(params, rate_row, rate), 1.0)
    return _put(ops_cur_idx, ops_cur_val, m, log2_in(params, seen_row, float(n)), 1.0)


@leaf
def shared_features(ev, e, codes, params, users, items, ops):  # type: ignore[no-untyped-def]
    """``FeatureBuilder.build`` for event ``e``, from its user and item rows before it."""
    params_fc = params.fc
    params_tabs = params.tabs
    params_fp = params.fp
    params_ip = params.ip
    ev_urow = ev.urow
    ev_irow = ev.irow
    ev_ts = ev.ts
    ev_ucode = ev.ucode
    ev_icode = ev.icode
    ev_type = ev.type
    ev_tp_start = ev.tp_start
    codes_user_fidx = codes.user_fidx
    codes_type_fidx = codes.type_fidx
    users_pi = users.pi
    items_xf = items.xf
    items_xi = items.xi
    codes_item_fidx = codes.item_fidx
    ev_tp_code = ev.tp_code
    codes_topic_fidx = codes.topic_fidx
    codes_topic_part = codes.topic_part
    codes_user_part = codes.user_part
    ops_cur_idx = ops.cur_idx
    ops_cur_val = ops.cur_val
    fc, tabs, fp, ip = params_fc, params_tabs, params_fp, params_ip
    ts, ucode, icode, kind = ev_ts[e], ev_ucode[e], ev_icode[e], ev_type[e]
    t0, t1 = ev_tp_start[e], ev_tp_start[e + 1]
    two = fp[L.FP_TWO]
    m = 0
    m = _put(ops_cur_idx, ops_cur_val, m, fc[L.F_BIAS], 1.0)
    m = _put(ops_cur_idx, ops_cur_val, m, codes_user_fidx[ucode], 1.0)
    m = _put(ops_cur_idx, ops_cur_val, m, codes_type_fidx[kind], 1.0)
    if icode >= 0:
        m = _put(ops_cur_idx, ops_cur_val, m, codes_item_fidx[icode], 1.0)
    if t1 > t0:
        w = 1.0 / math.sqrt(t1 - t0)
        for q in range(t0, t1):
            tc = ev_tp_code[q]
            m = _put(ops_cur_idx, ops_cur_val, m, codes_topic_fidx[tc], w)
            if ip[L.IP_CROSSES] != 0:
                h = cross_index(
                    codes_user_part[ucode], codes_topic_part[tc], fc[L.F_CROSS_SALT], ip[L.IP_MASK]
                )
                m = _put(ops_cur_idx, ops_cur_val, m, h, w)
    if ip[L.IP_TIME] != 0:
        hour, weekday = day_parts(ts)
        m = _put(ops_cur_idx, ops_cur_val, m, tabs[L.T_HOUR, hour], 1.0)
        m = _put(ops_cur_idx, ops_cur_val, m, tabs[L.T_WEEKDAY, weekday], 1.0)
    u = ev_urow[e]
    if users_pi[u, L.P_EXISTS] == 0:
        m = _put(ops_cur_idx, ops_cur_val, m, fc[L.F_USER_NEW], 1.0)
    else:
        m = _profile_features(ev, e, codes, params, users, ops, m)
        m = behaviour_features(ev, e, params, users, ops, m)
    it = ev_irow[e]
    if it < 0 or items_xi[it, L.I_EXISTS] == 0:
        m = _put(ops_cur_idx, ops_cur_val, m, fc[L.F_ITEM_NEW], 1.0)
    else:
        xf, xi = items_xf, items_xi
        at = ts if ts > xf[it, L.I_LAST] else xf[it, L.I_LAST]
        pop = xf[it, L.I_POP] * decay_factor(at, xf[it, L.I_ANCHOR], fp[L.FP_H_COUNTERS], two)
        m = _put(ops_cur_idx, ops_cur_val, m, fc[L.F_ITEM_POP], math.log1p(pop))
        m = _put(ops_cur_idx, ops_cur_val, m, log2_in(params, L.T_ITEM_POP, pop), 1.0)
        if xi[it, L.I_VN]:
            b = rounded_in(params, L.T_ITEM_VALUE, 2 * xf[it, L.I_VSUM] / xi[it, L.I_VN])
            m = _put(ops_cur_idx, ops_cur_val, m, b, 1.0)
    return m


@leaf
def _profile_features(ev, e, codes, params, users, ops, m):  # type: ignore[no-untyped-def]
    """``FeatureBuilder._profile_features``: recency, counts, decayed counts, value, interests."""
    params_fc = params.fc
    params_fp = params.fp
    users_pf = users.pf
    users_pi = users.pi
    users_il = users.il
    ev_urow = ev.urow
    ev_ts = ev.ts
    users_tlen = users.tlen
    users_tord = users.tord
    ev_tp_start = ev.tp_start
    users_ik = users.ik
    users_iv = users.iv
    ev_tp_code = ev.tp_code
    codes_type_dec = codes.type_dec
    users_dec = users.dec
    ops_cur_idx = ops.cur_idx
    ops_cur_val = ops.cur_val
    fc, fp = params_fc, params_fp
    pf, pi = users_pf, users_pi
    u, ts = ev_urow[e], ev_ts[e]
    two = fp[L.FP_TWO]
    last = pf[u, L.P_LAST]
    anchor = pf[u, L.P_ANCHOR]
    rec = (ts - last) / L.DAY
    if rec < 0.0:
        rec = 0.0
    m = _put(ops_cur_idx, ops_cur_val, m, fc[L.F_RECENCY], math.log1p(rec))
    m = _put(ops_cur_idx, ops_cur_val, m, log2_in(params, L.T_RECENCY, rec * 24), 1.0)
    m = _put(ops_cur_idx, ops_cur_val, m, log2_in(params, L.T_EVENTS, float(pi[u, L.P_N])), 1.0)
    at = ts if ts > last else last
    f_c = decay_factor(at, anchor, fp[L.FP_H_COUNTERS], two)
    for q in range(users_tlen[u]):
        ty = users_tord[u, q]
        m = _put(
            ops_cur_idx, ops_cur_val, m, codes_type_dec[ty], math.log1p(users_dec[u, ty] * f_c)
        )
    if pf[u, L.P_MONETARY] != 0.0:
        m = _put(
            ops_cur_idx,
            ops_cur_val,
            m,
            log2_in(params, L.T_MONETARY, pf[u, L.P_MONETARY]),
            1.0,
        )
    if pi[u, L.P_VN]:
        b = rounded_in(params, L.T_USER_VALUE, 2 * pf[u, L.P_VSUM] / pi[u, L.P_VN])
        m = _put(ops_cur_idx, ops_cur_val, m, b, 1.0)
    t0, t1 = ev_tp_start[e], ev_tp_start[e + 1]
    n_int = users_il[u]
    if t1 > t0 and n_int > 0:
        ik, iv, tp_code = users_ik, users_iv, ev_tp_code
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
        own = own * decay_factor(at, anchor, fp[L.FP_H_INTERESTS], two)
        m = _put(ops_cur_idx, ops_cur_val, m, fc[L.F_AFFINITY], share)
        m = _put(ops_cur_idx, ops_cur_val, m, decile_in(params, L.T_AFFINITY, share), 1.0)
        m = _put(ops_cur_idx, ops_cur_val, m, fc[L.F_TOP1] if top_in else fc[L.F_TOP0], 1.0)
        m = _put(ops_cur_idx, ops_cur_val, m, fc[L.F_INTEREST], math.log1p(own))
        m = _put(ops_cur_idx, ops_cur_val, m, log2_in(params, L.T_INTEREST, own), 1.0)
    return m


@leaf
def task_features(tasks, params, users, items, ops, t, key, u, it, m):  # type: ignore[no-untyped-def]
    """``FeatureBuilder.task_features`` of task ``t`` (``key``: the delayed task's key code,
    or -1), appended to the ``m`` shared features; returns the new count."""
    users_count = users.count
    items_count = items.count
    users_pi = users.pi
    users_oval = users.oval
    params_fc = params.fc
    items_xi = items.xi
    ops_cur_idx = ops.cur_idx
    ops_cur_val = ops.cur_val
    p_exists = users_pi[u, L.P_EXISTS] != 0
    if key >= 0 and p_exists:
        name = key_name(tasks, t, key)
        j = key_slot(users, u, name)
        positives, n = key_outcome_counts(users_oval[u, j] if j >= 0 else 0)
        m = _rate(ops, m, positives, n, params, L.F_KEY_RATE, L.T_KEY_RATE, L.T_KEY_SEEN)
    if not p_exists:
        m = _put(ops_cur_idx, ops_cur_val, m, params_fc[L.F_U_NEW_TASK], 1.0)
    else:
        c = users_count
        m = _rate(
            ops, m, c[u, L.C_POSITIVES, t], c[u, L.C_EXAMPLES, t], params, L.F_U_RATE,
            L.T_U_RATE, L.T_U_SEEN,
        )  # fmt: skip
    if it < 0 or items_xi[it, L.I_EXISTS] == 0:
        m = _put(ops_cur_idx, ops_cur_val, m, params_fc[L.F_I_NEW_TASK], 1.0)
    else:
        c = items_count
        m = _rate(
            ops, m, c[it, L.C_POSITIVES, t], c[it, L.C_EXAMPLES, t], params, L.F_I_RATE,
            L.T_I_RATE, L.T_I_SEEN,
        )  # fmt: skip
    return m

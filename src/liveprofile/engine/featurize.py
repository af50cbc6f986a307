"""Compiled feature building: :class:`~liveprofile.features.hashing.FeatureBuilder` on rows.

:func:`shared_features` is ``FeatureBuilder.build`` and :func:`task_features` is
``FeatureBuilder.task_features``, over the records of :mod:`liveprofile.engine.records`, with
the indices of :func:`liveprofile.engine.layout.feature_tables`. They write the features of one
example into ``ops.cur_idx`` / ``ops.cur_val`` and return how many there are; every float is
computed as the Python builder computes it, in the same order.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from liveprofile.engine import layout as L
from liveprofile.engine.rowops import key_slot

_jit = numba.njit(cache=True, nogil=True, error_model="numpy")


@_jit
def _clip(params, row, b):  # type: ignore[no-untyped-def]
    """Bucket ``b`` of table ``row``, the last bucket taking everything past it."""
    last = params.last[row]
    return params.tabs[row, b if b < last else last]


@_jit
def _bucket(params, row, x):  # type: ignore[no-untyped-def]
    """``_bucket`` of the Python feature builder: round half to even, then clip."""
    r = np.rint(x)
    if r < 0.0:
        r = 0.0
    return _clip(params, row, int(r))


@_jit
def _log2_bucket(params, row, x):  # type: ignore[no-untyped-def]
    """``_log2_bucket`` of the Python feature builder."""
    return _clip(params, row, int(math.log2(1.0 + x)))


@_jit
def _decile(params, row, x):  # type: ignore[no-untyped-def]
    """``_decile`` of the Python feature builder."""
    return _clip(params, row, int(x * 10))


@_jit
def _put(ops, m, i, v):  # type: ignore[no-untyped-def]
    """Set feature ``m`` of the example being built; returns the next position."""
    ops.cur_idx[m] = i
    ops.cur_val[m] = v
    return m + 1


@_jit
def _rate(ops, m, positives, n, params, f_rate, rate_row, seen_row):  # type: ignore[no-untyped-def]
    """A positive rate shrunk toward the prior: its distance from the prior, its decile bucket
    and a bucket of how many examples it rests on (FeatureBuilder.task_features)."""
    prior, strength = params.fp[L.FP_PRIOR], params.fp[L.FP_STRENGTH]
    rate = (positives + prior * strength) / (n + strength)
    m = _put(ops, m, params.fc[f_rate], rate - prior)
    m = _put(ops, m, _decile(params, rate_row, rate), 1.0)
    return _put(ops, m, _log2_bucket(params, seen_row, float(n)), 1.0)


@_jit
def shared_features(ev, e, codes, params, users, items, ops):  # type: ignore[no-untyped-def]
    """``FeatureBuilder.build`` for event ``e``, from its user and item rows before it."""
    fc, tabs, fp, ip = params.fc, params.tabs, params.fp, params.ip
    ts, ucode, icode, kind = ev.ts[e], ev.ucode[e], ev.icode[e], ev.type[e]
    t0, t1 = ev.tp_start[e], ev.tp_start[e + 1]
    two = fp[L.FP_TWO]
    m = 0
    m = _put(ops, m, fc[L.F_BIAS], 1.0)
    m = _put(ops, m, codes.user_fidx[ucode], 1.0)
    m = _put(ops, m, codes.type_fidx[kind], 1.0)
    if icode >= 0:
        m = _put(ops, m, codes.item_fidx[icode], 1.0)
    if t1 > t0:
        w = 1.0 / math.sqrt(t1 - t0)
        for q in range(t0, t1):
            tc = ev.tp_code[q]
            m = _put(ops, m, codes.topic_fidx[tc], w)
            if ip[L.IP_CROSSES] != 0:
                h = (codes.user_part[ucode] * L.MIX + codes.topic_part[tc]) ^ fc[L.F_CROSS_SALT]
                m = _put(ops, m, h & ip[L.IP_MASK], w)
    if ip[L.IP_TIME] != 0:
        its = int(ts)
        day = its // int(L.DAY)
        second = its - day * int(L.DAY)
        m = _put(ops, m, tabs[L.T_HOUR, second // int(L.HOUR)], 1.0)
        m = _put(ops, m, tabs[L.T_WEEKDAY, (day + 3) % 7], 1.0)
    u = ev.urow[e]
    if users.pi[u, L.P_EXISTS] == 0:
        m = _put(ops, m, fc[L.F_USER_NEW], 1.0)
    else:
        m = _profile_features(ev, e, codes, params, users, ops, m)
    it = ev.irow[e]
    if it < 0 or items.xi[it, L.I_EXISTS] == 0:
        m = _put(ops, m, fc[L.F_ITEM_NEW], 1.0)
    else:
        xf, xi = items.xf, items.xi
        at = ts if ts > xf[it, L.I_LAST] else xf[it, L.I_LAST]
        pop = xf[it, L.I_POP] * two ** (-(at - xf[it, L.I_ANCHOR]) / fp[L.FP_H_COUNTERS])
        m = _put(ops, m, fc[L.F_ITEM_POP], math.log1p(pop))
        m = _put(ops, m, _log2_bucket(params, L.T_ITEM_POP, pop), 1.0)
        if xi[it, L.I_VN]:
            b = _bucket(params, L.T_ITEM_VALUE, 2 * xf[it, L.I_VSUM] / xi[it, L.I_VN])
            m = _put(ops, m, b, 1.0)
    return m


@_jit
def _profile_features(ev, e, codes, params, users, ops, m):  # type: ignore[no-untyped-def]
    """``FeatureBuilder._profile_features``: recency, counts, decayed counts, value, interests."""
    fc, fp = params.fc, params.fp
    pf, pi = users.pf, users.pi
    u, ts = ev.urow[e], ev.ts[e]
    two = fp[L.FP_TWO]
    last = pf[u, L.P_LAST]
    anchor = pf[u, L.P_ANCHOR]
    rec = (ts - last) / L.DAY
    if rec < 0.0:
        rec = 0.0
    m = _put(ops, m, fc[L.F_RECENCY], math.log1p(rec))
    m = _put(ops, m, _log2_bucket(params, L.T_RECENCY, rec * 24), 1.0)
    m = _put(ops, m, _log2_bucket(params, L.T_EVENTS, float(pi[u, L.P_N])), 1.0)
    at = ts if ts > last else last
    f_c = two ** (-(at - anchor) / fp[L.FP_H_COUNTERS])
    for q in range(users.tlen[u]):
        ty = users.tord[u, q]
        m = _put(ops, m, codes.type_dec[ty], math.log1p(users.dec[u, ty] * f_c))
    if pf[u, L.P_MONETARY] != 0.0:
        m = _put(ops, m, _log2_bucket(params, L.T_MONETARY, pf[u, L.P_MONETARY]), 1.0)
    if pi[u, L.P_VN]:
        b = _bucket(params, L.T_USER_VALUE, 2 * pf[u, L.P_VSUM] / pi[u, L.P_VN])
        m = _put(ops, m, b, 1.0)
    t0, t1 = ev.tp_start[e], ev.tp_start[e + 1]
    n_int = users.il[u]
    if t1 > t0 and n_int > 0:
        ik, iv, tp_code = users.ik, users.iv, ev.tp_code
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
        own = own * two ** (-(at - anchor) / fp[L.FP_H_INTERESTS])
        m = _put(ops, m, fc[L.F_AFFINITY], share)
        m = _put(ops, m, _decile(params, L.T_AFFINITY, share), 1.0)
        m = _put(ops, m, fc[L.F_TOP1] if top_in else fc[L.F_TOP0], 1.0)
        m = _put(ops, m, fc[L.F_INTEREST], math.log1p(own))
        m = _put(ops, m, _log2_bucket(params, L.T_INTEREST, own), 1.0)
    return m


@_jit
def task_features(tasks, params, users, items, ops, t, key, u, it, m):  # type: ignore[no-untyped-def]
    """``FeatureBuilder.task_features`` of task ``t`` (``key``: the delayed task's key code,
    or -1), appended to the ``m`` shared features; returns the new count."""
    p_exists = users.pi[u, L.P_EXISTS] != 0
    if key >= 0 and p_exists:
        name = tasks.ko_item[t, key] if tasks.by_item[t] else tasks.ko_topic[t, key]
        j = key_slot(users, u, name)
        packed = users.oval[u, j] if j >= 0 else 0
        m = _rate(
            ops, m, packed >> L.KEY_SHIFT, packed & L.KEY_EXAMPLES, params, L.F_KEY_RATE,
            L.T_KEY_RATE, L.T_KEY_SEEN,
        )  # fmt: skip
    if not p_exists:
        m = _put(ops, m, params.fc[L.F_U_NEW_TASK], 1.0)
    else:
        c = users.count
        m = _rate(
            ops, m, c[u, L.C_POSITIVES, t], c[u, L.C_EXAMPLES, t], params, L.F_U_RATE,
            L.T_U_RATE, L.T_U_SEEN,
        )  # fmt: skip
    if it < 0 or items.xi[it, L.I_EXISTS] == 0:
        m = _put(ops, m, params.fc[L.F_I_NEW_TASK], 1.0)
    else:
        c = items.count
        m = _rate(
            ops, m, c[it, L.C_POSITIVES, t], c[it, L.C_EXAMPLES, t], params, L.F_I_RATE,
            L.T_I_RATE, L.T_I_SEEN,
        )  # fmt: skip
    return m

"""Two profiles' rows merged into one, as :func:`~liveprofile.profile.identity.merge_profiles`
merges the objects, in compiled code.

:func:`fold_into` merges a visitor's row into the row of a user who has a profile: the two rows
brought to the later anchor, counters, sums and maps added up in the order the dicts' keys would
have (the user's keys where they are, the visitor's new ones after them, in the visitor's
order), interests cut to the top K, spend to its days, behaviour maps trimmed, recent events
merged in their order; the visitor's row is emptied. :func:`merged_outcomes` says how many key
outcomes the merged row holds, for the caller to check they fit. What the rows do not hold stays
on the profile objects (:mod:`.foldinto`).

>>> from liveprofile.engine.records import Users
>>> U = Users.empty(2, types=2, tasks=1, top_k=3, room=2, recent=2)
>>> U.pf[:, :3] = (86400.0, 5.0, 9.0)  # anchor, first and last event
>>> U.pi[:] = (2, 0, 0, 1)  # two events, no purchase, exists
>>> U.cnt[0, 1], U.dec[0, 1], U.tord[0, 0], U.tlen[0] = 2, 2.0, 1, 1
>>> U.cnt[1, 0], U.dec[1, 0], U.tord[1, 0], U.tlen[1] = 2, 1.5, 0, 1
>>> fp = np.array([86400.0, 86400.0, 86400.0, 0.0, 0.0, 0.0, 2.0])
>>> ip = np.array([0, 0, 3, 0, 2, 0, 0, 0, 0, 0])
>>> from collections import namedtuple
>>> ranks = namedtuple("Ranks", "type_rank item_rank")(np.arange(2), np.arange(1))
>>> fold_into(U, 0, 1, fp, ip, ranks)
>>> U.pi[1].tolist(), U.tord[1, :U.tlen[1]].tolist(), U.dec[1, :2].tolist(), U.pi[0].tolist()
([4, 0, 0, 1], [0, 1], [1.5, 2.0], [0, 0, 0, 0])
"""

from __future__ import annotations

import math

import numpy as np

from liveprofile.engine import behaviour
from liveprofile.engine import layout as L
from liveprofile.engine.foldnew import empty_row
from liveprofile.engine.jit import jit
from liveprofile.engine.rowops import add_recent, rebase_row
from liveprofile.engine.rules import trim_limit
from liveprofile.profile.behaviour import B_CONVERTED, B_COUNTS, B_LAST


@jit
def fold_into(users, ra, ru, fp, ip, codes):  # type: ignore[no-untyped-def]
    """``merge_profiles(updater, into=row ru, other=row ra)`` on rows (see the module's
    docstring); row ``ra`` is emptied as a row without a profile is. The caller has checked
    that the key outcomes fit; ``codes``: the ranks of event types and
    items, which order recent events of one time."""
    pf, pi = users.pf, users.pi
    if pf[ra, L.P_ANCHOR] > pf[ru, L.P_ANCHOR]:
        rebase_row(users, ru, pf[ra, L.P_ANCHOR], fp)
    elif pf[ra, L.P_ANCHOR] < pf[ru, L.P_ANCHOR]:
        rebase_row(users, ra, pf[ru, L.P_ANCHOR], fp)
    n = pi[ru, L.P_N]
    pi[ru, L.P_N] = n + pi[ra, L.P_N]
    if pi[ra, L.P_N]:
        if n == 0:
            pf[ru, L.P_FIRST], pf[ru, L.P_LAST] = pf[ra, L.P_FIRST], pf[ra, L.P_LAST]
        else:
            pf[ru, L.P_FIRST] = min(pf[ru, L.P_FIRST], pf[ra, L.P_FIRST])
            pf[ru, L.P_LAST] = max(pf[ru, L.P_LAST], pf[ra, L.P_LAST])
    _add_types(users, ra, ru)
    _add_interests(users, ra, ru, ip[L.IP_TOP_K])
    pi[ru, L.P_PURCHASES] += pi[ra, L.P_PURCHASES]
    pf[ru, L.P_MONETARY] += pf[ra, L.P_MONETARY]
    pf[ru, L.P_VSUM] += pf[ra, L.P_VSUM]
    pi[ru, L.P_VN] += pi[ra, L.P_VN]
    lp = pf[ra, L.P_LASTPUR]
    if not math.isnan(lp) and (math.isnan(pf[ru, L.P_LASTPUR]) or lp > pf[ru, L.P_LASTPUR]):
        pf[ru, L.P_LASTPUR] = lp
    # examples and positives: the keys' order is on the profile objects (fold_profile)
    users.count[ru, :, :] += users.count[ra, :, :]
    users.first[ru, :, :] = -1
    _add_outcomes(users, ra, ru)
    for k in range(2):
        _add_behaviour(users, ra, ru, k, ip[L.IP_BEH_ROOM])
    _add_spend(users, ra, ru)
    for j in range(users.rlen[ra]):
        add_recent(users, ru, users.rts[ra, j], users.rty[ra, j], users.rit[ra, j],
                   users.rva[ra, j], ip[L.IP_RECENT], codes)  # fmt: skip
    users.touched[ru] = True
    empty_row(users, ra)


@jit
def _find(keys, m, key):  # type: ignore[no-untyped-def]
    """Where ``key`` is among the first ``m`` of ``keys`` (-1: not there)."""
    for j in range(m):
        if keys[j] == key:
            return j
    return -1


@jit
def _add_types(users, ra, ru):  # type: ignore[no-untyped-def]
    """``counts`` and ``decayed``: both keyed by the types in ``tord``'s order."""
    tord, cnt, dec = users.tord, users.cnt, users.dec
    m = users.tlen[ru]
    mine = users.tlen[ru]
    for q in range(users.tlen[ra]):
        c = tord[ra, q]
        if _find(tord[ru], mine, c) >= 0:
            cnt[ru, c] += cnt[ra, c]
            dec[ru, c] += dec[ra, c]
        else:
            tord[ru, m] = c
            cnt[ru, c] = cnt[ra, c]
            dec[ru, c] = dec[ra, c]
            m += 1
    users.tlen[ru] = m


@jit
def _added(mine_k, mine_v, m, their_k, their_v, n):  # type: ignore[no-untyped-def]
    """``add_into`` on lists of keys and values: copies of my first ``m`` with their first
    ``n`` added (new keys after mine, in their order), and how many there are."""
    keys = np.empty(m + n, mine_k.dtype)
    values = np.empty(m + n, mine_v.dtype)
    keys[:m] = mine_k[:m]
    values[:m] = mine_v[:m]
    w = m
    for q in range(n):
        j = _find(keys, m, their_k[q])
        if j >= 0:
            values[j] += their_v[q]
        else:
            keys[w], values[w] = their_k[q], their_v[q]
            w += 1
    return keys, values, w


@jit
def _add_interests(users, ra, ru, top_k):  # type: ignore[no-untyped-def]
    """Interests added up, then ``keep_top_interests``: of equals the earliest go first."""
    ik, iv, il = users.ik, users.iv, users.il
    keys, values, m = _added(ik[ru], iv[ru], il[ru], ik[ra], iv[ra], il[ra])
    while m > top_k:
        low = 0
        for q in range(1, m):
            if values[q] < values[low]:
                low = q
        keys[low : m - 1] = keys[low + 1 : m]
        values[low : m - 1] = values[low + 1 : m]
        m -= 1
    ik[ru, :m] = keys[:m]
    iv[ru, :m] = values[:m]
    il[ru] = m


@jit
def _add_outcomes(users, ra, ru):  # type: ignore[no-untyped-def]
    """Key outcomes added up, not trimmed (the next outcome counted trims them)."""
    okey, oval, olen = users.okey, users.oval, users.olen
    keys, values, m = _added(okey[ru], oval[ru], olen[ru], okey[ra], oval[ra], olen[ra])
    okey[ru, :m] = keys[:m]
    oval[ru, :m] = values[:m]
    olen[ru] = m


@jit
def _add_spend(users, ra, ru):  # type: ignore[no-untyped-def]
    """Spend added up, then the days before the latest's SPEND_DAYS dropped."""
    sday, scents, slen = users.sday, users.scents, users.slen
    if slen[ra] == 0:
        return
    days, amounts, m = _added(sday[ru], scents[ru], slen[ru], sday[ra], scents[ra], slen[ra])
    cutoff = days[:m].max() - L.SPEND_DAYS
    w = 0
    for q in range(m):
        if days[q] >= cutoff:
            sday[ru, w], scents[ru, w] = days[q], amounts[q]
            w += 1
    slen[ru] = w


@jit
def _add_behaviour(users, ra, ru, k, room):  # type: ignore[no-untyped-def]
    """``BehaviourTracker.merge`` of map ``k``: the later last touch, converted on either,
    counts added up; past the trim limit, the ``room`` most recent keys stay."""
    theirs = users.blen[ra, k]
    if theirs == 0:
        return
    bkey, bval = users.bkey, users.bval
    mine = users.blen[ru, k]
    keys = np.empty((1, 1, mine + theirs), np.int64)
    values = np.empty((1, 1, mine + theirs, bval.shape[3]))
    keys[0, 0, :mine] = bkey[ru, k, :mine]
    values[0, 0, :mine] = bval[ru, k, :mine]
    m = mine
    for q in range(theirs):
        j = _find(keys[0, 0], mine, bkey[ra, k, q])
        if j < 0:
            keys[0, 0, m] = bkey[ra, k, q]
            values[0, 0, m] = bval[ra, k, q]
            m += 1
            continue
        mine_j, their_q = values[0, 0, j], bval[ra, k, q]
        mine_j[B_LAST] = max(mine_j[B_LAST], their_q[B_LAST])
        mine_j[B_CONVERTED] = max(mine_j[B_CONVERTED], their_q[B_CONVERTED])
        for c in range(B_COUNTS, bval.shape[3]):
            mine_j[c] += their_q[c]
    if m > trim_limit(room):
        behaviour.trim(keys, values, 0, 0, m, room)
        m = room
    bkey[ru, k, :m] = keys[0, 0, :m]
    bval[ru, k, :m] = values[0, 0, :m]
    users.blen[ru, k] = m


@jit
def merged_outcomes(users, ra, ru):  # type: ignore[no-untyped-def]
    """How many key outcomes row ``ru`` holds once row ``ra``'s are added."""
    okey = users.okey
    mine = users.olen[ru]
    m = mine
    for q in range(users.olen[ra]):
        if _find(okey[ru], mine, okey[ra, q]) < 0:
            m += 1
    return m

"""The behaviour maps on the compiled path: :mod:`liveprofile.profile.behaviour` on rows.

A profile row holds both maps (items: 0, categories: 1, as ``profile.behaviour.KINDS``) in
:class:`~liveprofile.engine.records.Users`: ``bkey[u, k, :blen[u, k]]`` the item or topic codes in
insertion order, ``bval[u, k, j]`` the key's list (last interaction, converted, decayed counts).
:func:`touch` counts an event on one map, :func:`rebase` is ``BehaviourTracker.rebase`` and
:func:`behaviour_features` builds the features of :mod:`liveprofile.features.behaviour`; the
rules they follow (buckets, the mean value, decay) are the Python modules' own functions,
compiled (:mod:`liveprofile.engine.rules`). Identity links and erasures run in Python on the
profiles themselves (:mod:`liveprofile.engine.links`), so they need nothing here.

>>> from liveprofile.profile.behaviour import BehaviourTracker
>>> from liveprofile.config import ProfileConfig
>>> rows(BehaviourTracker(ProfileConfig(behaviour_keys=8), 1.0))
(12, 6)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from liveprofile.engine import layout as L
from liveprofile.engine.jit import leaf
from liveprofile.engine.rules import decay_factor, log2_in, mean_value, trim_limit, value_bucket
from liveprofile.features.behaviour import COUNT_SCALE, NEVER
from liveprofile.profile.behaviour import B_CONVERTED, B_COUNTS, B_LAST, trimmed

if TYPE_CHECKING:
    from liveprofile.engine.records import Users
    from liveprofile.profile.behaviour import BehaviourTracker
    from liveprofile.profile.state import Profile


def rows(tracker: BehaviourTracker) -> tuple[int, int]:
    """Keys a row has room for (the trim limit, one being added, and one spare that
    remembers the key last found, see :func:`_slot`) and floats per key."""
    return tracker.limit + 2, tracker.width


def load_row(
    U: Users, r: int, p: Profile, icode: dict[str, int], tcode: dict[str, int], room: int
) -> None:
    """Row ``r`` of ``U`` gets ``p``'s maps (their keys have codes already); a map with more
    keys than the row holds (the room was lowered) keeps the ``room`` most recent."""
    width = U.bval.shape[3]
    for k, (entries, code) in enumerate(
        ((p.behaviour_items, icode), (p.behaviour_categories, tcode))
    ):
        if not entries:
            continue
        if len(entries) > U.bkey.shape[2] - 2:  # past the trim limit
            entries = trimmed(entries, room)
        m = len(entries)
        U.bkey[r, k, :m] = [code[key] for key in entries]
        values = b"".join(entries.values())
        if len(values) == 8 * width * m:
            U.bval[r, k, :m] = np.frombuffer(values, "<f8").reshape(m, width)
        else:  # types added or removed since: zeros, or cut
            for j, entry in enumerate(entries.values()):
                floats = np.frombuffer(entry, "<f8")[:width]
                U.bval[r, k, j, : len(floats)] = floats
        U.blen[r, k] = m


@leaf
def _slot(users, u, k, key):  # type: ignore[no-untyped-def]
    """Where row ``u`` keeps key ``key`` in map ``k`` (-1: nowhere). Where the last key was
    found is remembered in the row's spare key, so the update after an event's features finds
    it without a second scan."""
    bkey = users.bkey
    m = users.blen[u, k]
    spare = bkey.shape[2] - 1
    j = bkey[u, k, spare]
    if j < m and bkey[u, k, j] == key:
        return j
    for j in range(m):
        if bkey[u, k, j] == key:
            bkey[u, k, spare] = j
            return j
    return -1


@leaf
def touch(users, u, k, key, col, converted, ts, w, room, vcol, wv):  # type: ignore[no-untyped-def]
    """Count an event on ``key`` in map ``k`` of row ``u``: its list's column ``col`` gets
    ``w`` (and column ``vcol``, when not 0, ``wv``); past ``trim_limit(room)`` keys the
    ``room`` most recent stay (:func:`_trim`)."""
    bkey, bval, blen = users.bkey, users.bval, users.blen
    j = _slot(users, u, k, key)
    if j < 0:
        j = blen[u, k]
        bkey[u, k, j] = key
        bval[u, k, j, B_LAST] = ts
        for c in range(1, bval.shape[3]):
            bval[u, k, j, c] = 0.0
        blen[u, k] = j + 1
    elif ts > bval[u, k, j, B_LAST]:
        bval[u, k, j, B_LAST] = ts
    if converted:
        bval[u, k, j, B_CONVERTED] = 1.0
    bval[u, k, j, col] += w
    if vcol > 0:
        bval[u, k, j, vcol] += wv
    m = blen[u, k]
    if m > trim_limit(room):
        trim(bkey, bval, u, k, m, room)
        blen[u, k] = room


@leaf
def trim(bkey, bval, u, k, m, room):  # type: ignore[no-untyped-def]
    """``profile.behaviour.trimmed``: drop the ``m - room`` least recently touched keys of
    map ``k`` of row ``u`` (the last ones of a tie, as a stable sort would), the others keep
    their order."""
    for _ in range(m - room):
        worst = -1
        for q in range(m):
            if bkey[u, k, q] >= 0 and (
                worst < 0 or bval[u, k, q, B_LAST] <= bval[u, k, worst, B_LAST]
            ):
                worst = q
        bkey[u, k, worst] = -1  # dropped (keys are codes, never negative)
    w = 0
    for q in range(m):
        if bkey[u, k, q] < 0:
            continue
        if w != q:
            bkey[u, k, w] = bkey[u, k, q]
            for c in range(bval.shape[3]):
                bval[u, k, w, c] = bval[u, k, q, c]
        w += 1


@leaf
def apply_event(ev, e, codes, params, users, w):  # type: ignore[no-untyped-def]
    """The event on its item's and category's behaviour, when its type is counted."""
    room = params.ip[L.IP_BEH_ROOM]
    col = codes.type_beh[ev.type[e]]
    if col < 0 or room == 0:
        return
    u, ts = ev.urow[e], ev.ts[e]
    converted = codes.type_monetary[ev.type[e]]
    vcol = params.ip[L.IP_BEH_VALUE]
    wv = 0.0
    if vcol > 0 and not math.isnan(ev.value[e]):
        wv = w * ev.value[e]
    if ev.icode[e] >= 0:
        touch(users, u, 0, ev.icode[e], col, converted, ts, w, room, vcol, wv)
    if ev.cat[e] >= 0:
        touch(users, u, 1, ev.cat[e], col, converted, ts, w, room, vcol, wv)


@leaf
def rebase(users, u, f_c):  # type: ignore[no-untyped-def]
    """``BehaviourTracker.rebase``: scale the counts of row ``u`` by ``f_c``."""
    bval, blen = users.bval, users.blen
    for k in range(2):
        for j in range(blen[u, k]):
            for c in range(B_COUNTS, bval.shape[3]):
                bval[u, k, j, c] *= f_c


@leaf
def behaviour_features(ev, e, params, users, ops, m):  # type: ignore[no-untyped-def]
    """The behaviour features (:mod:`liveprofile.features.behaviour`) of event ``e`` (its user
    row exists), appended to
    the ``m`` features built; returns the new count. Off when the tables are not there."""
    tabs = params.tabs
    if tabs.shape[0] <= L.T_BEHAVIOUR:
        return m
    idx, val = ops.cur_idx, ops.cur_val
    bval = users.bval
    per_kind = (tabs.shape[0] - L.T_BEHAVIOUR) // 2
    u, ts = ev.urow[e], ev.ts[e]
    f_c = -1.0  # the counters' decay, computed at the first count read
    vcol = params.ip[L.IP_BEH_VALUE]
    n = vcol if vcol > 0 else bval.shape[3]  # the counts end where the value sum is
    n_counts = per_kind - 2 - (1 if vcol > 0 else 0)
    if n > B_COUNTS + n_counts:
        n = B_COUNTS + n_counts
    for k in range(2):
        key = ev.icode[e] if k == 0 else ev.cat[e]
        if key < 0:
            continue
        base = L.T_BEHAVIOUR + k * per_kind
        j = _slot(users, u, k, key)
        if j < 0:
            idx[m] = tabs[base, NEVER]
            val[m] = 1.0
            m += 1
            continue
        idx[m] = tabs[base, 1 if bval[u, k, j, B_CONVERTED] > 0 else 0]
        d = ts - bval[u, k, j, B_LAST]
        if d < 0.0:
            d = 0.0
        idx[m + 1] = log2_in(params, base + 1, d / L.HOUR)
        val[m] = 1.0
        val[m + 1] = 1.0
        m += 2
        for c in range(B_COUNTS, n):
            v = bval[u, k, j, c]
            if v == 0.0:
                continue
            if f_c < 0.0:
                f_c = _decay(params, users, u, ts)
            x = COUNT_SCALE * v * f_c
            if 1.0 + x >= 2.0:  # bucket 1 or more, as the Python builder tests it
                idx[m] = log2_in(params, base + c, x)
                val[m] = 1.0
                m += 1
        if vcol > 0:
            idx[m] = tabs[base + per_kind - 1, value_bucket(mean_value(bval[u, k, j], vcol))]
            val[m] = 1.0
            m += 1
    return m


@leaf
def _decay(params, users, u, ts):  # type: ignore[no-untyped-def]
    """The counters' decay factor of row ``u`` from its anchor to when features read it."""
    pf = users.pf
    last = pf[u, L.P_LAST]
    at = ts if ts > last else last
    return decay_factor(at, pf[u, L.P_ANCHOR], params.fp[L.FP_H_COUNTERS], params.fp[L.FP_TWO])

"""A visitor folded into a user who has no profile yet, on the compiled step's rows.

The common login in a shop: a visitor browses anonymously, then logs in (or signs up) at the
first purchase, under a user id that has no profile yet. The Python lifecycle at that stop
(:meth:`liveprofile.engine.links.Stops._stop`) writes the visitor's row back to its profile,
merges it into a new profile of the user (:func:`~liveprofile.profile.identity.merge_profiles`)
and reads the user's row back from it. Merging into an empty profile changes little, so
:func:`fold_new` does it on the rows: the user's row gets the visitor's, rebased to the login's
time as the new profile's anchor, with the cuts the merge makes (the interests it keeps, the
spend days it keeps), and the visitor's row is emptied. The profile object of the user holds
only what the rows do not (aliases, scores, counts' key order, velocity lists); the row's
fields reach it when the row is written back, as for any row the kernel touched.

The velocity counts of the visitor's events before the login are not counted at the stop:
they are the user's events from there on (counting them onto the visitor's lists and merging
those into the user's empty ones gives the lists counting them onto the user's would), and are
counted with the user's later ones after the kernel (:mod:`liveprofile.engine.velocity`).

In a batch without commands the kernel calls :func:`fold_new` itself at such a login, with no
stop (:mod:`liveprofile.engine.loginrun`), and :func:`book_fold` does the Python part after the
kernel call, from the visitor's row as it was (:class:`Snapshot`).

A user who has a profile is folded into on the rows by :mod:`.foldinto`; anything else (the
visitor has aliases, a profile idle past the TTL) takes the general path. With an anomaly
detector, the visitor's events before the login are scored as the user's too, in the batch's
order: the detector reads the same counts and gaps.

>>> import numpy as np
>>> from liveprofile.engine.records import Users
>>> U = Users.empty(2, types=2, tasks=1, top_k=3, room=2, recent=2)
>>> U.pf[0, :3] = (0.0, 5.0, 9.0)  # anchor, first and last event
>>> U.pi[0] = (2, 0, 0, 1)  # two events, no purchase, exists
>>> U.cnt[0, 1], U.dec[0, 1], U.tord[0, 0], U.tlen[0] = 2, 2.0, 1, 1
>>> fp = np.array([86400.0, 86400.0, 86400.0, 0.0, 0.0, 0.0, 2.0])
>>> ip = np.array([0, 0, 3, 0, 2, 0, 0, 0, 0, 0])
>>> fold_new(U, 0, 1, 86400.0, fp, ip)
>>> U.pi[1].tolist(), U.pf[1, :3].tolist(), float(U.dec[1, 1]), U.pi[0].tolist()
([2, 0, 0, 1], [86400.0, 5.0, 9.0], 1.0, [0, 0, 0, 0])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from liveprofile.engine import layout as L
from liveprofile.engine.jit import jit, leaf
from liveprofile.engine.machinecode import compiled_for
from liveprofile.engine.rowio import _counted
from liveprofile.engine.rowops import keep_spend_since, keep_top, rebase_row
from liveprofile.profile.state import Profile

if TYPE_CHECKING:
    from liveprofile.engine.links import Stops


@jit
def fold_new(users, ra, ru, ts, fp, ip):  # type: ignore[no-untyped-def]
    """``merge_profiles(updater, updater.new(user, ts), visitor)`` on rows: row ``ru`` (empty)
    gets row ``ra``'s profile merged into a new one made at ``ts``; row ``ra`` is emptied as a
    row without a profile is."""
    pf, pi = users.pf, users.pi
    pf[ru, :] = pf[ra, :]
    pi[ru, :] = pi[ra, :]
    users.cnt[ru, :] = users.cnt[ra, :]
    users.dec[ru, :] = users.dec[ra, :]
    users.tord[ru, :] = users.tord[ra, :]
    users.tlen[ru] = users.tlen[ra]
    users.ik[ru, :] = users.ik[ra, :]
    users.iv[ru, :] = users.iv[ra, :]
    users.il[ru] = users.il[ra]
    users.okey[ru, :] = users.okey[ra, :]
    users.oval[ru, :] = users.oval[ra, :]
    users.olen[ru] = users.olen[ra]
    users.sday[ru, :] = users.sday[ra, :]
    users.scents[ru, :] = users.scents[ra, :]
    users.slen[ru] = users.slen[ra]
    # the recent events: added one by one, in their order, to the new profile's none
    users.rts[ru, :] = users.rts[ra, :]
    users.rty[ru, :] = users.rty[ra, :]
    users.rit[ru, :] = users.rit[ra, :]
    users.rva[ru, :] = users.rva[ra, :]
    users.rlen[ru] = users.rlen[ra]
    users.count[ru, :, :] = users.count[ra, :, :]
    users.first[ru, :, :] = -1  # the counts' keys are in the profile's dicts, in their order
    users.bkey[ru, :, :] = users.bkey[ra, :, :]
    users.blen[ru, :] = users.blen[ra, :]
    users.bval[ru, :, :, :] = users.bval[ra, :, :, :]
    # the sums start from the new profile's zeros
    pf[ru, L.P_MONETARY] = 0.0 + pf[ra, L.P_MONETARY]
    pf[ru, L.P_VSUM] = 0.0 + pf[ra, L.P_VSUM]
    if pf[ra, L.P_ANCHOR] < ts:  # the visitor's values rebased to the new profile's anchor
        rebase_row(users, ru, ts, fp)
    keep_top(users, ru, ip[L.IP_TOP_K])
    m = users.slen[ru]
    if m > 0:
        sday = users.sday
        latest = sday[ru, 0]
        for j in range(1, m):
            latest = max(latest, sday[ru, j])
        keep_spend_since(users, ru, m, latest - L.SPEND_DAYS)
    users.touched[ru] = True
    empty_row(users, ra)


@leaf
def empty_row(users, r):  # type: ignore[no-untyped-def]
    """Row ``r`` as ``Stops._reload`` leaves a row without a profile."""
    users.pf[r, :] = 0.0
    users.pf[r, L.P_LASTPUR] = np.nan
    users.pi[r, :] = 0
    users.cnt[r, :] = 0
    users.dec[r, :] = 0.0
    users.tord[r, :] = 0
    users.tlen[r] = 0
    users.ik[r, :] = 0
    users.iv[r, :] = 0.0
    users.il[r] = 0
    users.okey[r, :] = 0
    users.oval[r, :] = 0
    users.olen[r] = 0
    users.sday[r, :] = 0
    users.scents[r, :] = 0
    users.slen[r] = 0
    users.rts[r, :] = 0.0
    users.rty[r, :] = 0
    users.rit[r, :] = 0
    users.rva[r, :] = 0.0
    users.rlen[r] = 0
    users.count[r, :, :] = 0
    users.first[r, :, :] = -1
    users.touched[r] = False
    users.bkey[r, :, :] = 0
    users.blen[r, :] = 0
    users.bval[r, :, :, :] = 0.0


def fold_visitor(stops: Stops, e: int, anon: str, user: str, ts: float, ttl: float) -> bool:
    """At login event ``e``, fold visitor ``anon`` into ``user`` on the rows when ``user`` has
    no profile (see the module's docstring): the profiles, links, segments, scores and
    velocity counts end as :meth:`Stops._change` with ``Step._fold`` leaves them.
    False (nothing done) when the general path must run."""
    state, U, risk = stops.state, stops.U, stops.risk
    assert risk is not None
    ra, ru = stops.row_of.get(anon, -1), stops.row_of.get(user, -1)
    profiles = state.profiles
    if (
        ra < 0
        or ru < 0
        or ra == ru
        or not U.pi[ra, L.P_EXISTS]
        or U.pi[ra, L.P_N] == 0
        or U.pi[ru, L.P_EXISTS]
        or user in profiles
        or anon in state.aliases
    ):
        return False
    wm = float(stops.params.fp[L.FP_WATERMARK])
    if U.pf[ra, L.P_LAST] + ttl < wm:  # expires first: the general path
        return False
    old = profiles.get(anon)
    if old is not None and (
        old.aliases or (not risk.velocity and (old.v_events or old.v_purchases or old.v_items))
    ):
        return False
    snap = Snapshot(float(U.pf[ra, L.P_ANCHOR]), float(U.pf[ra, L.P_FIRST]),
                    float(U.pf[ra, L.P_LAST]), int(U.pi[ra, L.P_N]),
                    int(U.pi[ra, L.P_PURCHASES]), float(U.pf[ra, L.P_MONETARY]),
                    bool(U.touched[ra]), U.count[ra].copy(), U.first[ra].copy())  # fmt: skip
    if stops._fold_rows is None:
        args = (U, ra, ru, ts, stops.params.fp, stops.params.ip)
        stops._fold_rows = compiled_for(fold_new, args)
    stops._fold_rows(U, ra, ru, ts, stops.params.fp, stops.params.ip)
    book_fold(stops, e, anon, user, snap, ra, ru, int(stops.outputs.res[2]))
    return True


class Snapshot(NamedTuple):
    """The visitor's row as it was when folded: what the bookkeeping of the fold reads."""

    anchor: float
    first: float
    last: float
    n: int
    purchases: int
    monetary: float
    touched: bool
    count: Any  # examples and positives per task
    ticks: Any  # their ticks (``Users.first``)


def book_fold(
    stops: Stops, e: int, anon: str, user: str, snap: Snapshot, ra: int, ru: int, records: int
) -> None:
    """The Python part of folding visitor ``anon`` (row ``ra``) into ``user`` (row ``ru``) at
    login event ``e``, the rows folded already: the profile objects, links, segments, scores
    (``records``: the batch's records then) and velocity counts, as :meth:`Stops._change`
    with ``Step._fold`` leaves them."""
    state, risk = stops.state, stops.risk
    assert risk is not None
    profiles = state.profiles
    old = profiles.get(anon)
    p = Profile(user, snap.anchor, snap.first, snap.last, n=snap.n)
    # what writing the visitor's row back would have made of the dicts whose key order the
    # rows do not hold, then copied into the new profile by the merge
    examples = {} if old is None else old.examples
    positives = {} if old is None else old.positives
    if snap.touched:
        names = stops.tables.task_names
        counts, ticks = snap.count.tolist(), snap.ticks.tolist()
        examples = _counted(examples, names, counts[L.C_EXAMPLES], ticks[L.C_EXAMPLES])
        positives = _counted(positives, names, counts[L.C_POSITIVES], ticks[L.C_POSITIVES])
    p.examples, p.positives = dict(examples), dict(positives)
    p.aliases = [anon]
    if old is not None:
        p.scores = dict(old.scores)
    counts = stops.held.get(anon, old)  # with a detector, a stand-in may hold the counts so far
    if counts is not None:
        p.anomaly = counts.anomaly
        p.v_events, p.v_purchases, p.v_items = counts.v_events, counts.v_purchases, counts.v_items
    visitor = (snap.purchases, snap.monetary, p.last_ts)
    ts = float(stops.ev.ts[e])
    # Lifecycle._link
    before, out = stops.before, stops.out
    before.setdefault(user, None)
    before.setdefault(anon, visitor)
    state.aliases[anon] = user
    state.checkpoint.links += 1
    out.links[anon] = user
    if old is not None:
        del profiles[anon]
        stops.base._leave_segments(state, old, ts, out, announce=True)
    profiles[user] = p
    out.deleted.add(anon)
    out.users.discard(anon)
    out.users.add(user)
    # Stops._change
    stops.held.pop(anon, None)
    stops.held[user] = p
    stops.remade[anon] = (e, True)
    stops.remade[user] = (e, False)
    # the visitor's scores so far pass to the user (Stops._cut). The user had no profile, so
    # no score of its own before the login: they all pass, and a stop's second cut (dropping
    # those that stay) would find none
    stops.cuts.append((records, ra, ru, frozenset()))
    ev = stops.ev
    mine = np.flatnonzero(ev.urow[:e] == ra)
    mine = mine[ev.ok[mine] & ~risk.counted[mine]]  # the visitor's events not counted yet
    if not risk.velocity and risk.scorer is None:  # nothing to count: as if counted at the stop
        risk.counted[mine] = True
        risk.reset(ru, p)
    else:  # the user's from here, counted with the user's later ones
        if len(mine):
            ev.urow[mine] = ru
            risk.moved(mine, ru)
            names_of = stops.names
            for k in mine.tolist():
                names_of[k] = user
        risk.last[ru], risk.n[ru], risk.exists[ru] = risk.last[ra], risk.n[ra], risk.exists[ra]
    risk.reset(ra, None)
    stops._follow(anon, e)
    stops.folded += 1

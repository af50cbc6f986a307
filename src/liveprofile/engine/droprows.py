"""Erasures and TTL expiry inside the compiled login run: the kernel empties the rows itself.

A ``$forget`` or a profile idle past ``run.profile_ttl`` used to stop the kernel
(:class:`~liveprofile.engine.links.Stops`): the row written back to its profile, the lifecycle
deleting the profile, the row reloaded empty, each link removed followed by the id's later
events. :func:`~liveprofile.engine.loginrun.run_folding` now takes them in its compiled loop,
as it folds logins: :func:`next_stop` finds the next event that is marked or whose user is idle
past the TTL (as :func:`~liveprofile.engine.links.next_stop` does), and :func:`take` closes the
pending examples due by the event's time (``kernel.advance``), notes the drop in :class:`Drops`
(with the row's records so far and whether the row held a profile), empties the row and points
every id linked to the user (:func:`plan` found them before the batch) back at its own row,
for its later events and pending outcomes. After the call :func:`book_drop` does, in the
batch's order with the folds (:func:`~liveprofile.engine.loginrun.book_folds`), what is object
level: the profile, its links and segment memberships deleted by the lifecycle
(``Lifecycle._erase``, ``Lifecycle._delete``), the scores of its records cut, the later events
named after the ids unlinked. No profile is decoded or written back: the row goes as it is.

:func:`plan` leaves out what the links of the batch may change before it: an erasure or
expiry of an id that a login or ``$merge`` of the batch names earlier, or that leads to one.
When the kernel returns at one of those, :func:`replan` plans the rest of the batch again from
the links as the stops and folds before it left them, and the kernel goes on from there; it is
the Python stop's only if the new plan leaves it too (a login or ``$merge`` at that event).
The expiry of a linked id's user at the id's event (``Lifecycle._expire_owner``) is always a
stop. ``DROP_ROWS`` False turns the whole path off (every erasure and expiry stops the kernel,
as before).

>>> import numpy as np
>>> d = Drops.none(3, 2)
>>> int(d.n[0]), d.ints.shape, bool(d.erase.any()), float(d.ttl[0])
(0, (3, 5), False, inf)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from liveprofile.engine import kernel
from liveprofile.engine import layout as L
from liveprofile.engine.foldnew import empty_row
from liveprofile.engine.jit import leaf
from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.visitors import BatchIds
from liveprofile.events.schema import FORGET
from liveprofile.profile.state import Profile

if TYPE_CHECKING:
    from liveprofile.engine.links import Stops

#: the kernel takes erasures and TTL expiry itself (False: the Python stops take them)
DROP_ROWS = True

#: Drops.ints columns
D_EVENT, D_KIND, D_ROW, D_EXISTED, D_RECORDS = range(5)
#: kinds of drop
ERASE, EXPIRE = 1, 2


class Drops(NamedTuple):
    """What the kernel may drop in a batch (:func:`plan`), and the drops it made, in order."""

    ttl: Any  # [the TTL] (inf: none)
    erase: Any  # per event: a $forget the kernel takes
    target: Any  # per event: the row a $forget empties (its id's)
    self_code: Any  # per event: the code of a linked id a $forget unlinks (-1: none)
    linked: Any  # per event: its own id is (or may get) linked: an expiry there stops
    row_until: Any  # per user row: the first event it may no longer be dropped in the kernel at
    lstart: Any  # per user row: where its ids linked to it start in lcode, lrow (rows + 1)
    lcode: Any  # the codes of the ids linked to each row's user
    lrow: Any  # and their own rows (-1: none)
    stamp: Any  # scratch of next_stop, per user row: the scan that noted sx, sl
    sx: Any  # ... whether the row holds a profile by then
    sl: Any  # ... its last event time
    epoch: Any  # [scans so far]
    ints: Any  # the drops: event, kind, row, the row held a profile, records so far
    at: Any  # per drop: the watermark then
    n: Any  # [drops noted]

    @classmethod
    def none(cls, n: int, rows: int, ttl: float = float("inf")) -> Drops:
        """Nothing planned: the kernel drops nothing (and with a TTL stops at an expiry)."""
        return cls(
            np.array([ttl]), np.zeros(n, np.bool_), np.full(n, -1, np.int64),
            np.full(n, -1, np.int64), np.zeros(n, np.bool_), np.full(rows, n + 1, np.int64),
            np.zeros(rows + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
            np.zeros(rows, np.int64), np.zeros(rows, np.bool_), np.zeros(rows),
            np.zeros(1, np.int64), np.zeros((n, 5), np.int64), np.zeros(n), np.zeros(1, np.int64),
        )  # fmt: skip


def _closure(aliases: Any, user: str) -> list[str]:
    """The ids linked to ``user``, directly or through other linked ids."""
    out: list[str] = []
    seen = {user}
    todo = [user]
    while todo:
        for s in sorted(aliases.sources_of(todo.pop())):
            if s not in seen:
                seen.add(s)
                out.append(s)
                todo.append(s)
    return out


def plan(
    stops: Stops,
    ids: BatchIds | None,
    marks: Any,
    ttl: float,
    after: int = -1,
) -> Drops | None:
    """The erasures and expiries the kernel may take in the batch (None: none, or
    ``DROP_ROWS`` off, or an anomaly detector scoring in order: the stops take them).
    ``ids``: the batch's ids (None: a batch as columns, of plain events only). A drop of ids
    that a login or ``$merge`` of the batch names, from that event on, is left to
    :func:`replan` (the kernel returns there, and takes it once planned again from the links
    as the batch left them). ``after``: plan the events after this one only, from the state's
    links as they are."""
    if not DROP_ROWS or stops.in_order:
        return None
    events, state, users, row_of = stops.events, stops.state, stops.users, stops.row_of
    aliases, code = state.aliases, stops.tables.users.code
    n, rows = len(marks), len(users)
    at = [k for k in np.flatnonzero(marks).tolist() if k > after]
    command = np.zeros(n, np.bool_) if ids is None else ids.command
    own = events.user if ids is None else ids.user  # type: ignore[attr-defined]
    forgets = [k for k in at if command[k] and events[k].type == FORGET]
    if not forgets and ttl == float("inf"):
        return None
    # the first event at which a login or $merge of the batch may make or change the links
    # of each id it names
    first: dict[str, int] = {}
    #: and at which it may link the id (a login's visitor, the ids of a $merge)
    linking: dict[str, int] = {}
    for k in at:
        if command[k] and events[k].type == FORGET:
            continue
        user, anon = events[k].user, events[k].anonymous_id
        # a login, folded in the kernel or not, links ids the plan did not see: a drop of
        # them from here on is the kernel's only once planned again (replan) from the links
        # as the login left them
        for x in (user, anon):
            if x is not None:
                first.setdefault(x, k)
                first.setdefault(aliases.get(x, x), k)
        linking.setdefault(anon if anon is not None else user, k)
        if command[k]:
            linking.setdefault(user, k)
    d = Drops.none(n, rows, ttl)
    closures: dict[int, list[str]] = {}
    never = n + 1

    def until(r: int) -> int:
        """Until which event the ids to point back at their own rows when row ``r``'s user
        goes are those found before the batch (its links unchanged by the batch's)."""
        found = closures.get(r)
        user = users[r]
        if found is None:
            found = closures[r] = _closure(aliases, user)
            p = peek(state.profiles, user)
            if p is not None:  # listed aliases not loaded: unlinked too
                found += [a for a in p.aliases if a not in aliases and a != user]
        return min([first.get(x, never) for x in (user, *found)])

    for k in forgets:
        user = events[k].user
        owner = aliases.get(user)
        r = row_of.get(user, -1)
        if r < 0 or k >= until(r) or (owner is not None and k >= first.get(owner, never)):
            continue
        d.erase[k] = True
        d.target[k] = r
        if owner is not None:
            d.self_code[k] = code[user]
    if ttl != float("inf"):
        get = linking.get
        d.linked[:] = [u in aliases or get(u, never) < k for k, u in enumerate(own)]
    d.row_until[:] = [until(r) for r in range(rows)]
    lists = [closures.get(r) or [] for r in range(rows)]
    d.lstart[1:] = np.cumsum([len(x) for x in lists])
    flat = [a for x in lists for a in x]
    return d._replace(
        lcode=np.array([code.get(a, -1) for a in flat], np.int64),
        lrow=np.array([row_of.get(a, -1) for a in flat], np.int64),
    )


@leaf
def next_stop(run, logins, drops, lo, skip):  # type: ignore[no-untyped-def]
    """The first event from ``lo`` on, other than ``skip`` (done already), that is marked or
    whose user is idle past the TTL as of the watermark then (``links.next_stop`` on the rows
    as the kernel leaves them); the number of events if none."""
    ev, params, users = run[0], run[3], run[4]
    marks = logins.marks
    n = ev.ok.shape[0]
    ttl = drops.ttl[0]
    if ttl == np.inf:
        stop = lo
        while stop < n and (not marks[stop] or stop == skip):
            stop += 1
        return stop
    ok, urow, ts = ev.ok, ev.urow, ev.ts
    pi, pf = users.pi, users.pf
    stamp, sx, sl = drops.stamp, drops.sx, drops.sl
    epoch = drops.epoch[0] + 1
    drops.epoch[0] = epoch
    wm = params.fp[L.FP_WATERMARK]
    for e in range(lo, n):
        if not ok[e] and not marks[e]:
            continue
        t = ts[e]
        if t > wm:
            wm = t
        if e != skip and marks[e]:
            return e
        if ok[e]:
            u = urow[e]
            if stamp[u] == epoch:
                ex, la = sx[u], sl[u]
            else:
                ex, la = pi[u, L.P_EXISTS] != 0, pf[u, L.P_LAST]
            if e != skip and ex and la + ttl < wm:
                return e
            if not ex:
                ex, la = True, t
            elif t > la:
                la = t
            stamp[u], sx[u], sl[u] = epoch, ex, la
    return n


@leaf
def take(run, logins, drops, e):  # type: ignore[no-untyped-def]
    """Take the erasure or expiry at event ``e`` on the rows if :func:`plan` allows it (see
    the module's docstring); False: not one, or the Python lifecycle's."""
    ev, codes, tasks, params, users, items, pool, ops, out = run
    ttl = drops.ttl[0]
    if drops.erase[e]:
        kind, r = ERASE, drops.target[e]
        if drops.self_code[e] >= 0 and users.pi[r, L.P_EXISTS] != 0:
            return False  # a linked id with a profile of its own: the lifecycle's
        if e >= drops.row_until[r]:
            return False  # a login the kernel left to a stop linked to it
    elif not logins.marks[e] and ttl != np.inf:
        r = ev.urow[e]
        if r < 0 or e >= drops.row_until[r] or drops.linked[e]:
            return False
        wm = max(params.fp[L.FP_WATERMARK], ev.ts[e])
        if users.pi[r, L.P_EXISTS] == 0 or users.pf[r, L.P_LAST] + ttl >= wm:
            return False
        kind = EXPIRE
    else:
        return False
    kernel.advance(codes, tasks, params, users, items, pool, ops, out, ev.ts[e])
    f = drops.n[0]
    drops.n[0] = f + 1
    di = drops.ints
    di[f, D_EVENT], di[f, D_KIND], di[f, D_ROW] = e, kind, r
    di[f, D_EXISTED], di[f, D_RECORDS] = users.pi[r, L.P_EXISTS] != 0, out.res[2]
    drops.at[f] = params.fp[L.FP_WATERMARK]
    empty_row(users, r)
    if drops.self_code[e] >= 0 and kind == ERASE:  # the id erased, linked: its own now
        c = drops.self_code[e]
        repoint(ev, codes, logins, c, r, e, c)
    for j in range(drops.lstart[r], drops.lstart[r + 1]):  # the ids linked to the user
        c = drops.lcode[j]
        repoint(ev, codes, logins, c, drops.lrow[j], e, c)
    return True


def replan(stops: Stops, marks: Any, fast: Any, drops: Drops, e: int) -> Drops | None:
    """The kernel left the erasure or expiry at event ``e`` to a stop, as :func:`plan` had it
    from the links before the batch: a plan of the events from ``e`` on from the links as the
    batch's stops and folds left them, if the kernel may take it with that (None: the stop it
    is). A later erasure the kernel no longer takes leaves the later logins to the stops."""
    if not DROP_ROWS or stops.in_order:
        return None
    ids = stops.ids
    command = ids is not None and bool(ids.command[e])
    forget = bool(marks[e]) and command and stops.events[e].type == FORGET
    if marks[e] and not forget:
        return None  # a login or $merge
    new = plan(stops, ids, marks, float(drops.ttl[0]), e - 1)
    if new is None:
        return None
    if forget:
        if not new.erase[e]:
            return None
    else:
        r = int(stops.ev.urow[e])
        if r < 0 or e >= new.row_until[r] or new.linked[e]:
            return None
    if fast.any() and (drops.erase[e + 1 :] & ~new.erase[e + 1 :]).any():
        fast[e + 1 :] = False
    return new


@leaf
def repoint(ev, codes, logins, c, rc, e, uc):  # type: ignore[no-untyped-def]
    """Id ``c``'s pending outcomes and events after ``e`` go to row ``rc``, the events under
    user code ``uc`` (``Stops._follow``; the id's own code when it is unlinked, the user's at a
    login)."""
    if c < 0:
        return
    codes.owner_row[c] = rc
    named, order = logins.named, logins.order
    for q in range(np.searchsorted(named, c), np.searchsorted(named, c, "right")):
        k = order[q]
        if k > e:
            ev.urow[k] = rc
            ev.ucode[k] = uc


def book_drop(stops: Stops, drops: Drops, f: int) -> None:
    """The object-level part of drop ``f`` of ``drops``, as ``Stops._change`` does it at a
    stop: the lifecycle deletes the profile and its links, the records' scores are cut, the
    later events of the ids unlinked are theirs."""
    e, kind, r, existed, records = drops.ints[f].tolist()
    stops.dropped += 1
    at = float(drops.at[f])
    base, state, out, before = stops.base, stops.state, stops.out, stops.before
    profiles = state.profiles
    user = stops.events[e].user if kind == ERASE else stops.users[r]
    if existed and peek(profiles, user) is None:
        # made in the batch: the profile a write-back would have made, about to go
        profiles[user] = Profile(user=user, anchor=0.0, first_ts=0.0, last_ts=0.0)
    risk = stops.risk
    assert risk is not None
    ev = stops.ev
    # the velocity counts of the row's events so far went with the profile
    mine = np.flatnonzero(ev.urow[:e] == r) if r >= 0 else np.zeros(0, np.int64)
    risk.counted[mine[ev.ok[mine]]] = True
    old = peek(profiles, user)
    saved, out.links = out.links, {}
    try:
        if kind == ERASE:
            base._erase(state, user, out, before)
        else:
            assert old is not None
            base._delete(state, old, at, out, before, announce=True)
    finally:
        changed, out.links = out.links, saved
        saved.update(changed)
    if old is not None and r >= 0:
        stops.cuts.append((records, r, -1, frozenset()))
    stops.held.pop(user, None)
    stops.remade[user] = (e, True)
    if r >= 0:
        risk.reset(r, None)
    for anon in changed:  # the kernel's repointing, again: a fold booked before undid it
        assert state.aliases.get(anon, anon) == anon, "a drop only removes links"
        stops._follow(anon, e)

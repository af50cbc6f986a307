"""A batch with logins in one compiled call: the kernel folds a visitor into a new user itself.

In a shop where visitors log in at their first purchase, nearly every login links a visitor to
a user id that has no profile yet, which :func:`.foldnew.fold_new` folds on the rows. Stopping
the kernel at each such login to do it from Python (:class:`.links.Stops`) cost a kernel call
and a Python stop per login. :func:`run_folding` runs the batch's stretches and those folds in
one call: at a login marked in :class:`Logins` ``fast`` whose rows allow it (the visitor's row
has events, the user's has no profile) it closes the pending examples the login's time makes
due (``kernel.advance``), notes what the Python bookkeeping needs in :class:`FoldLog`, folds
the rows, and points the visitor's later events and pending outcomes at the user, as the stop
does. Erasures and expiries it takes on the rows too (:mod:`.droprows`, noted in
:class:`~.droprows.Drops`, booked in order with the folds). It returns at the first other stop
(a login into a user with a profile, a visitor with aliases, a ``$merge``, an erasure or
expiry :func:`.droprows.plan` leaves to the lifecycle), for the Python lifecycle to run
there. The logins are planned from the state before the batch up to its first command the
kernel does not take (a ``$merge``), and after each such command again, from the links the
lifecycle left (:func:`run_with_folds`).

:func:`fast_logins` marks the logins that may take this path, from what the batch and the state
hold before the batch (the rest is read on the rows, in the kernel); :func:`book_folds` then
does, in the batch's order, the Python part of each fold (:func:`.foldnew.book_fold`): profile
objects, links, segments, scores and velocity counts, as at a stop.

A login into a user who has a profile (a shop's returning customer) is folded in the kernel too
(:func:`.foldinto.book_into`; its Python part, :func:`.foldinto.book_link`, is booked in the
same order), unless :data:`INTO_PROFILES` is off: then it stops there for the Python lifecycle
(which folds it on the rows too, :func:`.foldinto.fold_profile`). When the merged key outcomes
need wider rows, the kernel returns there and the call resumes on the widened rows.

>>> import numpy as np
>>> log = FoldLog.empty(2, tasks=1)
>>> int(log.n[0]), log.ints.shape, log.count.shape, int(log.into.n[0])
(0, (2, 7), (2, 2, 1), 0)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np

from liveprofile.engine import droprows, kernel
from liveprofile.engine import layout as L
from liveprofile.engine.foldinto import (
    I_BARE,
    I_EVENT,
    IntoLog,
    book_bare,
    book_into,
    book_link,
    note_link,
    widen,
)
from liveprofile.engine.foldnew import Snapshot, book_fold, fold_new
from liveprofile.engine.jit import jit
from liveprofile.engine.lazyprofiles import ProfileMap, peek
from liveprofile.engine.machinecode import compiled_for
from liveprofile.engine.records import Events, Users
from liveprofile.engine.velocitymerge import count_merges
from liveprofile.engine.visitors import BatchIds
from liveprofile.events.schema import Event

if TYPE_CHECKING:
    from liveprofile.engine.links import Stops

#: whether the kernel folds logins into users who have a profile (else: a Python stop each)
INTO_PROFILES = True

#: FoldLog.ints columns
F_EVENT, F_RA, F_RU, F_N, F_PURCHASES, F_TOUCHED, F_RECORDS = range(7)
#: FoldLog.floats columns
F_ANCHOR, F_FIRST, F_LAST, F_MONETARY = range(4)


class Logins(NamedTuple):
    """A batch's stops, as the kernel reads them."""

    marks: Any  # per event: a stop (a login, a command)
    fast: Any  # per event: a login the kernel may fold (fast_logins)
    arow: Any  # per event: the row of its anonymous id (-1: none)
    acode: Any  # per event: the code of its anonymous id (-1: none)
    order: Any  # the events by the code of the id each names (Stops.visitor), stable
    named: Any  # those codes, in that order
    into: bool  # whether logins into users with a profile fold too (INTO_PROFILES)


class FoldLog(NamedTuple):
    """The logins the kernel folded, in order, with the visitor's row as it was at the fold."""

    ints: Any  # event, visitor's row, user's row, events, purchases, touched, records so far
    floats: Any  # anchor, first and last event time, monetary
    count: Any  # the visitor row's examples and positives per task, and their ticks
    first: Any
    n: Any  # folds noted
    into: IntoLog  # the logins folded into users with a profile

    @classmethod
    def empty(cls, cap: int, tasks: int) -> FoldLog:
        return cls(
            np.zeros((cap, 7), np.int64),
            np.zeros((cap, 4)),
            np.zeros((cap, 2, tasks), np.int64),
            np.zeros((cap, 2, tasks), np.int64),
            np.zeros(1, np.int64),
            IntoLog.empty(cap, tasks),
        )


@jit
def run_folding(run, logins, log, start, skip, drops):  # type: ignore[no-untyped-def]
    """Run the events from ``start`` (event ``skip``'s stop done already), folding the fast
    logins on the rows and taking the erasures and expiries ``drops`` allows
    (:mod:`.droprows`); returns the first event where the Python lifecycle must run (the
    number of events: none)."""
    ev, codes, tasks, params, users, items, pool, ops, out = run
    fast = logins.fast
    pi, pf = users.pi, users.pf
    n = ev.ok.shape[0]
    lo = start
    while True:
        stop = droprows.next_stop(run, logins, drops, lo, skip)
        if stop > lo:
            part = Events(
                ev.ok[lo:stop], ev.urow[lo:stop], ev.ucode[lo:stop], ev.irow[lo:stop],
                ev.icode[lo:stop], ev.type[lo:stop], ev.ts[lo:stop], ev.value[lo:stop],
                ev.cat[lo:stop], ev.tp_start[lo : stop + 1], ev.tp_code,
            )  # fmt: skip
            kernel.run(part, codes, tasks, params, users, items, pool, ops, out)
        if stop >= n:
            return n
        # an erasure or an expiry: the row emptied, the ids linked to it their own again
        if droprows.take(run, logins, drops, stop):
            lo, skip = stop, stop
            continue
        ra, ru = logins.arow[stop], ev.urow[stop]
        if not fast[stop] or ra < 0 or ru < 0 or ra == ru:
            return stop
        into = pi[ru, L.P_EXISTS] != 0
        wm, ttl = max(params.fp[L.FP_WATERMARK], ev.ts[stop]), drops.ttl[0]
        if into and pf[ru, L.P_LAST] + ttl < wm:
            return stop  # the user idle past the TTL: its expiry at the login is the lifecycle's
        if pi[ra, L.P_EXISTS] == 0:  # a visitor without a profile: a link only
            if not logins.into:
                return stop
            kernel.advance(codes, tasks, params, users, items, pool, ops, out, ev.ts[stop])
            note_link(log.into, stop, ra, ru, out.res[2])
            lo, skip = stop, stop
            _follow(ev, codes, logins, stop, ru)
            continue
        if (
            (into and not logins.into)
            or (not into and pi[ra, L.P_N] == 0)
            or pf[ra, L.P_LAST] + ttl < wm  # a visitor idle past the TTL: fold_visitor's
        ):
            return stop
        ts = ev.ts[stop]
        kernel.advance(codes, tasks, params, users, items, pool, ops, out, ts)
        if into:  # a returning customer; False: rows to widen first (log.into.n[1])
            fp, ip = params.fp, params.ip
            if not book_into(users, log.into, stop, ra, ru, out.res[2], fp, ip, codes):
                return stop
            lo, skip = stop, stop
            _follow(ev, codes, logins, stop, ru)
            continue
        f = log.n[0]
        log.n[0] = f + 1
        li, lf = log.ints, log.floats
        li[f, F_EVENT], li[f, F_RA], li[f, F_RU] = stop, ra, ru
        li[f, F_N], li[f, F_PURCHASES] = pi[ra, L.P_N], pi[ra, L.P_PURCHASES]
        li[f, F_TOUCHED], li[f, F_RECORDS] = users.touched[ra], out.res[2]
        lf[f, F_ANCHOR], lf[f, F_FIRST] = pf[ra, L.P_ANCHOR], pf[ra, L.P_FIRST]
        lf[f, F_LAST], lf[f, F_MONETARY] = pf[ra, L.P_LAST], pf[ra, L.P_MONETARY]
        log.count[f, :, :] = users.count[ra, :, :]
        log.first[f, :, :] = users.first[ra, :, :]
        fold_new(users, ra, ru, ts, params.fp, params.ip)
        _follow(ev, codes, logins, stop, ru)
        lo, skip = stop, stop


@jit
def _follow(ev, codes, logins, stop, ru):  # type: ignore[no-untyped-def]
    """The later events and pending outcomes of the visitor of login ``stop`` are user row
    ``ru``'s (``Stops._follow``)."""
    droprows.repoint(ev, codes, logins, logins.acode[stop], ru, stop, ev.ucode[stop])


def fast_logins(
    stops: Stops, ids: BatchIds, marks: Any, velocity: bool, untaken: Any, after: int = -1
) -> Any:
    """Which marked events are logins :func:`run_folding` may fold (None: none): a login of
    an anonymous id that is not linked and that no other login or command of the batch names,
    with a stored profile (if any) without aliases, into a user id that is neither linked, nor
    stored (unless :data:`INTO_PROFILES`), nor the anonymous id of a login of the batch. (The
    rows, read in the kernel, decide the rest.) Only logins before the first of ``untaken``
    (the commands the kernel does not take: a ``$merge``, an erasure :func:`.droprows.plan`
    leaves to a stop) are folded: such a command changes links this plan cannot see, so the
    logins after it take the stops, or a plan made after it (``after``: of the events after
    that one only, from the state as the batch's events up to it left it). ``velocity``:
    whether velocity counts are kept."""
    every = [k for k in np.flatnonzero(marks).tolist() if k > after]
    later = np.flatnonzero(untaken[after + 1 :])
    first = after + 1 + int(later[0]) if len(later) else len(marks)
    at = [k for k in every if k < first]
    anon, user = ids.anon, ids.user
    anons = Counter(anon[k] for k in every)
    users = {user[k] for k in every}
    state, row_of = stops.state, stops.row_of
    aliases, profiles = state.aliases, state.profiles
    fast = np.zeros(len(marks), np.bool_)
    for k in at:
        a, u = anon[k], user[k]
        if (
            a is None
            or anons[a] > 1
            or a in users
            or u in anons
            or a in aliases
            or u in aliases
            or (u in profiles and not INTO_PROFILES)
            or a not in row_of
            or u not in row_of
        ):
            continue
        old = peek(profiles, a)  # its alias list and velocity lists: no need to decode it
        if old is not None and (
            old.aliases
            or (not velocity and (held_lists(profiles, a) or old.v_events or old.v_purchases))
            or (not velocity and old.v_items)
        ):
            continue
        fast[k] = True
    return fast if fast.any() else None


def held_lists(profiles: dict[str, Any], user: str) -> bool:
    """Whether ``user``'s velocity lists are held as bytes (so not empty, to be safe)."""
    return isinstance(profiles, ProfileMap) and profiles.holds_velocity(user)


def book_folds(
    stops: Stops, log: FoldLog, events: Sequence[Event], drops: droprows.Drops | None = None
) -> None:
    """The Python part of the folds :func:`run_folding` noted, and of its ``drops``, in the
    batch's order."""
    into, new = log.into, int(log.n[0])
    nd = 0 if drops is None else int(drops.n[0])
    at = log.ints[:new, F_EVENT].tolist()
    dat = [] if drops is None else drops.ints[:nd, droprows.D_EVENT].tolist()
    g = d = 0

    def upto(e: int) -> None:
        """Book the new users' folds and the drops before event ``e``, in order."""
        nonlocal g, d
        while (g < new and at[g] < e) or (d < nd and dat[d] < e):
            if d < nd and (g >= new or dat[d] < at[g]):
                assert drops is not None
                droprows.book_drop(stops, drops, d)
                d += 1
            else:
                _book_new(stops, log, g, events)
                g += 1

    ids, folded = stops.ids, int(into.n[0])
    count, first = into.count[:folded].tolist(), into.first[:folded].tolist()
    for i in range(folded):  # the logins into profiles, in order with the rest
        e = int(into.ints[i, I_EVENT])
        upto(e)
        # the login's two ids (a login folded here names a user no link moves)
        anon, user = (ids.anon[e], ids.user[e]) if ids is not None else _ids(events[e])
        assert anon is not None
        if into.ints[i, I_BARE]:
            book_bare(stops, into, i, anon, user)
        else:
            book_link(stops, into, i, anon, user, False, (count[i], first[i]))
    upto(len(events) + 1)
    log.n[0] = into.n[0] = 0
    if drops is not None:
        drops.n[0] = 0
    profiles = stops.state.profiles
    if isinstance(profiles, ProfileMap):  # the velocity lists of the logins into profiles
        assert stops.risk is not None
        count_merges(stops.risk, profiles)


def _book_new(stops: Stops, log: FoldLog, f: int, events: Sequence[Event]) -> None:
    """The Python part of fold ``f`` of a visitor into a new user (:func:`.foldnew.book_fold`)."""
    e, ra, ru, n, purchases, touched, records = log.ints[f].tolist()
    anchor, first, last, monetary = log.floats[f].tolist()
    snap = Snapshot(anchor, first, last, n, purchases, monetary, bool(touched),
                    log.count[f], log.first[f])  # fmt: skip
    ids = stops.ids
    anon, user = (ids.anon[e], ids.user[e]) if ids is not None else _ids(events[e])
    assert anon is not None
    book_fold(stops, e, anon, user, snap, ra, ru, records)


def _ids(event: Event) -> tuple[str | None, str]:
    """A login's anonymous id and user."""
    return event.anonymous_id, event.user


def run_with_folds(
    stops: Stops, marks: Any, fast: Any, drops: droprows.Drops | None = None
) -> Users:
    """:meth:`Stops.run` with the kernel folding the ``fast`` logins itself (None: none) and
    taking the erasures and expiries of ``drops``: one compiled call up to each other stop;
    returns the user rows."""
    n, ids = len(stops.ev.ok), stops.ids
    if fast is None:  # (a batch as columns has no logins, nor ids)
        fast = np.zeros(n, np.bool_)
    if drops is None:
        drops = droprows.Drops.none(n, len(stops.users))
    ttl = float(drops.ttl[0])
    logins, log = _plan(stops, marks, fast)
    start, skip, retried = 0, -1, -1
    while True:
        run = (
            stops.ev, stops.codes, stops.tasks, stops.params, stops.U, stops.items, stops.pool,
            stops.ops, stops.outputs,
        )  # fmt: skip
        args = (run, logins, log, start, skip, drops)
        if stops._folding is None:
            stops._folding = compiled_for(run_folding, args)
        stop = int(stops._folding(*args))
        stops.stopped += int(log.n[0] + log.into.n[0])
        book_folds(stops, log, stops.events, drops)
        if stop >= n:
            return stops.U
        room = int(log.into.n[1])
        if room:  # the merged key outcomes need wider rows: resume at the login on them
            widen(stops, {"okey": room, "oval": room})
            start, skip = stop, -1
            continue
        if stop != retried:  # an erasure or expiry the plan left: the links as they are now
            again = droprows.replan(stops, marks, fast, drops, stop)
            if again is not None:
                drops, retried, start, skip = again, stop, stop, -1
                continue
        stops._stop(stop, ttl)
        untaken = None if ids is None else ids.command & ~drops.erase
        if untaken is not None and untaken[stop]:
            # a $merge: the later logins the kernel may fold, from the links it left
            assert ids is not None and stops.risk is not None
            velocity = bool(stops.risk.velocity)
            again = fast_logins(stops, ids, marks, velocity, untaken, after=stop)
            if again is not None:
                fast = again
                logins, log = _plan(stops, marks, fast)
        start, skip = stop, stop


def _plan(stops: Stops, marks: Any, fast: Any) -> tuple[Logins, FoldLog]:
    """The stops and ``fast`` logins as the kernel reads them, and a log with room for the
    folds."""
    n, ids, code = len(marks), stops.ids, stops.tables.users.code
    at = np.flatnonzero(fast).tolist()
    arow, acode = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    if at:
        assert ids is not None
        anon = ids.anon
    arow[at] = [stops.row_of[cast(str, anon[k])] for k in at]
    acode[at] = [code[cast(str, anon[k])] for k in at]
    order, named = stops._visitors()
    logins = Logins(marks, fast, arow, acode, order, named, INTO_PROFILES)
    return logins, FoldLog.empty(len(at), len(stops.tables.task_names))

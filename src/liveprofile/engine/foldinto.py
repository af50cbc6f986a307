"""A visitor folded into a user who has a profile, on the compiled step's rows.

A shop's returning customer browses anonymously, then logs in: a login into a user id that has a
profile. The Python lifecycle at that stop (:meth:`liveprofile.engine.links.Stops._change` with
``Step._fold``) wrote both rows back to their profiles, merged the objects
(:func:`~liveprofile.profile.identity.merge_profiles`) and read the user's row back.
:func:`book_into` makes the same merge on the rows (:func:`.rowmerge.fold_into`), noting in an
:class:`IntoLog` what the Python part needs of the two rows as they were; :func:`book_link`
then does that part from the log: what the rows do not hold is merged on the profile objects
(examples' and positives' key order, scores, aliases, velocity lists, the anomaly score), read
with :func:`~liveprofile.engine.lazyprofiles.peek`: the user's profile is not decoded (but for
its velocity lists, which are counted on the decoded profile as at any stop).

:func:`fold_profile` does both at a stop of the Python lifecycle; in a batch without commands or
TTL the kernel calls :func:`book_into` itself at the login (:mod:`liveprofile.engine.loginrun`)
and :func:`book_link` runs after the kernel call, in the batch's order. When the merged key
outcomes need more room than the rows have, :func:`book_into` folds nothing and says how much
(``IntoLog.n[1]``): the caller widens the rows (:func:`widen`) and calls it again.

The velocity counts go as at the stop: the two users' events before the login are counted on
their own lists (with an anomaly detector, every event before it, :meth:`Stops._stop`), and the
visitor's lists are merged into the user's (:meth:`RiskTracker.merge_counts`). Without a
detector, on profiles that hold their lists as bytes, :func:`book_link` only notes the merge, and
the merges of a kernel call are counted on the bytes in one pass after its bookkeeping
(:mod:`.velocitymerge`).

An operator's ``$merge`` of a user into another with a profile is folded the same way at its
stop, its links re-pointed as ``Lifecycle._link`` does. Anything else (the id folded linked
already, either profile idle past the TTL, a user without a row in the batch) takes the general
path.

>>> log = IntoLog.empty(2, tasks=1)
>>> int(log.n[0]), log.ints.shape, log.rows.shape, log.count.shape
(0, (2, 6), (2, 2, 6), (2, 2, 2, 1))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from liveprofile.engine import layout as L
from liveprofile.engine.erasure import repoint
from liveprofile.engine.jit import jit
from liveprofile.engine.lazyprofiles import ProfileMap, peek
from liveprofile.engine.machinecode import compiled_for
from liveprofile.engine.records import Users
from liveprofile.engine.rowio import _counted
from liveprofile.engine.rowmerge import fold_into, merged_outcomes
from liveprofile.engine.rules import trim_limit
from liveprofile.engine.velocitymerge import book_merge, count_merges
from liveprofile.profile.identity import MAX_ALIASES, add_into
from liveprofile.profile.population import Standing
from liveprofile.profile.state import Profile

if TYPE_CHECKING:
    from liveprofile.engine.links import Stops

#: IntoLog.ints columns: the login's event, the visitor's and the user's rows, the batch's
#: records then, the user's events after the fold, whether it is a link only (:func:`note_link`)
I_EVENT, I_RA, I_RU, I_RECORDS, I_N, I_BARE = range(6)
#: IntoLog.rows columns, per row (0: the user's, 1: the visitor's), as it was
R_ANCHOR, R_FIRST, R_LAST, R_MONETARY, R_PURCHASES, R_TOUCHED = range(6)


class IntoLog(NamedTuple):
    """The logins folded into profiles, in order, with the two rows as they were."""

    ints: Any  # I_* per fold
    rows: Any  # R_* per fold and row (user, visitor)
    last: Any  # the user's last event time after the fold
    count: Any  # per fold and row: examples and positives per task
    first: Any  # and their ticks (``Users.first``)
    n: Any  # folds noted; the key outcomes' room needed (0: none)

    @classmethod
    def empty(cls, cap: int, tasks: int) -> IntoLog:
        return cls(
            np.zeros((cap, 6), np.int64),
            np.zeros((cap, 2, 6)),
            np.zeros(cap),
            np.zeros((cap, 2, 2, tasks), np.int64),
            np.zeros((cap, 2, 2, tasks), np.int64),
            np.zeros(2, np.int64),
        )


@jit
def book_into(users, log, e, ra, ru, records, fp, ip, codes):  # type: ignore[no-untyped-def]
    """Fold row ``ra`` into row ``ru`` (:func:`.rowmerge.fold_into`) at login event ``e``
    (``records``: the batch's records so far), noting the two rows as they were in ``log``;
    False (nothing done, ``log.n[1]``: the room needed) when the merged key outcomes do not
    fit the rows."""
    room = trim_limit(merged_outcomes(users, ra, ru)) + 2  # as load_users lays it out
    if room > users.okey.shape[1]:
        log.n[1] = room
        return False
    log.n[1] = 0
    f = log.n[0]
    log.n[0] = f + 1
    pf, pi = users.pf, users.pi
    log.ints[f, I_EVENT], log.ints[f, I_RA], log.ints[f, I_RU] = e, ra, ru
    log.ints[f, I_RECORDS], log.ints[f, I_BARE] = records, 0
    for j in range(2):
        r = ru if j == 0 else ra
        row = log.rows[f, j]
        row[R_ANCHOR], row[R_FIRST] = pf[r, L.P_ANCHOR], pf[r, L.P_FIRST]
        row[R_LAST], row[R_MONETARY] = pf[r, L.P_LAST], pf[r, L.P_MONETARY]
        row[R_PURCHASES] = pi[r, L.P_PURCHASES]
        row[R_TOUCHED] = 1.0 if users.touched[r] else 0.0
        log.count[f, j, :, :] = users.count[r, :, :]
        log.first[f, j, :, :] = users.first[r, :, :]
    fold_into(users, ra, ru, fp, ip, codes)
    log.ints[f, I_N] = pi[ru, L.P_N]
    log.last[f] = pf[ru, L.P_LAST]
    return True


@jit
def note_link(log, e, ra, ru, records):  # type: ignore[no-untyped-def]
    """Note in ``log`` a login at event ``e`` whose visitor (row ``ra``) has no profile: a
    link only, no rows to fold (:func:`book_bare`)."""
    f = log.n[0]
    log.n[0] = f + 1
    log.ints[f, I_EVENT], log.ints[f, I_RA], log.ints[f, I_RU] = e, ra, ru
    log.ints[f, I_RECORDS], log.ints[f, I_BARE] = records, 1


def book_bare(stops: Stops, log: IntoLog, f: int, anon: str, user: str) -> None:
    """The Python part of link ``f`` of ``log`` (:func:`note_link`): ``anon``, without a
    profile, becomes an alias of ``user``, as ``Lifecycle._link`` and :meth:`Stops._change`
    leave it (the rows need no writing back nor reading: neither changes)."""
    e, ra, ru, records = log.ints[f, :I_N].tolist()
    state = stops.state
    state.aliases[anon] = user
    state.checkpoint.links += 1
    stops.out.links[anon] = user
    stops.held.pop(anon, None)
    stops.remade[anon] = (e, True)
    if not stops.U.pi[ru, L.P_EXISTS] and user not in state.profiles:
        stops.held.pop(user, None)
        stops.remade[user] = (e, True)
    stops.cuts.append((records, ra, -1, frozenset()))  # Stops._cut: none to pass on
    stops._follow(anon, e)


def fold_profile(
    stops: Stops, e: int, anon: str, user: str, ts: float, ttl: float, merge: bool = False
) -> bool:
    """At login event ``e`` (or an operator's ``merge``), fold ``anon`` into ``user``, who has
    a profile, on the rows (see the module's docstring): profiles, links, segments, scores
    and velocity counts end as :meth:`Stops._change` with ``Step._fold`` leaves them. False
    (nothing done) when the general path must run."""
    state, U, risk = stops.state, stops.U, stops.risk
    assert risk is not None
    ra, ru = stops.row_of.get(anon, -1), stops.row_of.get(user, -1)
    profiles, aliases = state.profiles, state.aliases
    if (
        ra < 0
        or ru < 0
        or ra == ru
        or not U.pi[ra, L.P_EXISTS]
        or not U.pi[ru, L.P_EXISTS]
        or anon in aliases
        or user in aliases
    ):
        return False
    wm = float(stops.params.fp[L.FP_WATERMARK])
    if min(U.pf[ra, L.P_LAST], U.pf[ru, L.P_LAST]) + ttl < wm:  # one expires first
        return False
    if peek(profiles, anon) is not None and not risk.velocity and _has_lists(profiles, anon):
        return False
    log = IntoLog.empty(1, len(stops.tables.task_names))
    records = int(stops.outputs.res[2])
    while True:
        args = (stops.U, log, e, ra, ru, records, stops.params.fp, stops.params.ip, stops.codes)
        if stops._fold_into is None:
            stops._fold_into = compiled_for(book_into, args)
        if stops._fold_into(*args):
            break
        widen(stops, {"okey": int(log.n[1]), "oval": int(log.n[1])})
    book_link(stops, log, 0, anon, user, merge)
    if isinstance(profiles, ProfileMap):
        count_merges(risk, profiles)
    return True


def book_link(
    stops: Stops,
    log: IntoLog,
    f: int,
    anon: str,
    user: str,
    merge: bool,
    counts: tuple[Any, Any] | None = None,
) -> None:
    """The Python part of fold ``f`` of ``log`` (visitor ``anon`` into ``user``), the rows
    folded already: the profile objects, links, segments, scores and velocity counts, as
    :meth:`Stops._change` with ``Step._fold`` leaves them. ``counts``: ``log.count[f]`` and
    ``log.first[f]`` as lists, when the caller read them already."""
    state, risk = stops.state, stops.risk
    assert risk is not None
    e, ra, ru, records, n = log.ints[f, :I_BARE].tolist()
    (mine, theirs), last = log.rows[f].tolist(), float(log.last[f])
    if stops.in_order:  # every event before the login, in order (as Stops._stop does)
        risk.upto(e)
    profiles = state.profiles
    before = stops.before
    for who, row in ((user, mine), (anon, theirs)):
        if who not in before:
            before[who] = int(row[R_PURCHASES]), row[R_MONETARY], row[R_LAST]
    # profiles made by this batch's events get their objects, as writing the rows back does
    into = peek(profiles, user)
    if into is None:
        into = profiles[user] = Profile(user, *mine[: R_LAST + 1])
    other = peek(profiles, anon)
    if other is None:
        other = profiles[anon] = Profile(anon, *theirs[: R_LAST + 1])
    # examples and positives as writing the rows back would leave them, then added up
    names = stops.tables.task_names
    counted = []
    both = ((into, mine), (other, theirs))
    if counts is None and (mine[R_TOUCHED] or theirs[R_TOUCHED]):
        counts = log.count[f].tolist(), log.first[f].tolist()
    for j, (p, row) in enumerate(both):
        examples, positives = p.examples, p.positives
        if row[R_TOUCHED]:
            assert counts is not None
            count, ticks = counts[0][j], counts[1][j]
            examples = _counted(examples, names, count[L.C_EXAMPLES], ticks[L.C_EXAMPLES])
            positives = _counted(positives, names, count[L.C_POSITIVES], ticks[L.C_POSITIVES])
        counted.append((dict(examples), positives))
    (examples, positives), (their_examples, their_positives) = counted
    add_into(examples, their_examples)
    positives = dict(positives)
    add_into(positives, their_positives)
    # the two users' events before the login, on their own lists, then merged; held as bytes
    # by the profiles, on those, with the batch's other merges (velocitymerge.count_merges)
    on_bytes = risk.velocity and not stops.in_order and isinstance(profiles, ProfileMap)
    if on_bytes:
        assert isinstance(profiles, ProfileMap)
        book_merge(risk, profiles, e, (ru, ra), (user, anon), last, n)
    elif not stops.in_order:
        risk.rows([ra, ru], e)
    into.examples, into.positives = examples, positives
    had = frozenset(into.scores)
    into.scores = {**other.scores, **into.scores}
    their_aliases = other.aliases
    if not their_aliases and anon not in into.aliases:  # a session's visitor (most logins)
        into.aliases = [*into.aliases, anon]
    else:
        into.aliases = list(
            dict.fromkeys(a for a in (*into.aliases, anon, *their_aliases) if a != user)
        )
    if len(into.aliases) > MAX_ALIASES:
        into.aliases = into.aliases[-MAX_ALIASES:]
    if not on_bytes and (risk.velocity or risk.scorer is not None):  # on the counts' objects
        risk.tracker.merge_counts(risk.profile_of(user), risk.profile_of(anon), last)
    elif into.anomaly is None:  # (merge_counts' too)
        into.anomaly = other.anomaly
    # Lifecycle._link
    state.aliases[anon] = user
    state.checkpoint.links += 1
    out = stops.out
    out.links[anon] = user
    changed = [anon, *(repoint(state, anon, user, out) if merge else ())]
    for alias in their_aliases:  # a known user's own links now lead to ``user``
        if alias != user:
            state.aliases[alias] = user
            out.links[alias] = user
            changed.append(alias)
    del profiles[anon]
    ts = float(stops.ev.ts[e])
    stops.base._leave_segments(state, other, ts, out, announce=True)
    out.deleted.add(anon)
    out.users.discard(anon)
    out.users.add(user)
    # Stops._change
    stops.held.pop(anon, None)
    stops.remade[anon] = (e, True)
    if not on_bytes:  # (else count_merges does)
        risk.reset(ra, None)
        risk.last[ru], risk.n[ru], risk.exists[ru] = last, n, True
    stops.cuts.append((records, ra, ru, had))  # Stops._cut, with the records at the login
    stops.cuts.append((records, ra, -1, frozenset()))
    for alias in dict.fromkeys(changed):
        stops._follow(alias, e)
    stops.folded += 1


def widen(stops: Stops, widths: dict[str, int]) -> Users:
    """``stops``' user rows with the two-dimensional arrays named in ``widths`` at least that
    wide (a merged profile may hold more key outcomes than the rows have room for)."""
    U, fields = stops.U, {}
    for name, width in widths.items():
        a = getattr(U, name)
        if a.ndim == 2 and width > a.shape[1]:
            wide = np.zeros((a.shape[0], width), a.dtype)
            wide[:, : a.shape[1]] = a
            fields[name] = wide
    if fields:
        stops.U = U._replace(**fields)
    return stops.U


def row_standing(U: Users, r: int) -> Standing:
    """``population.standing`` of the profile in row ``r``."""
    return int(U.pi[r, L.P_PURCHASES]), float(U.pf[r, L.P_MONETARY]), float(U.pf[r, L.P_LAST])


def unwritten(stops: Stops, user: str) -> bool:
    """Whether the row of ``user``, whose profile a change at a stop deletes (erased or
    expired), may go without being written back to it first: the profile object is there
    (its standing before the batch is noted from the row, for the population)."""
    if peek(stops.state.profiles, user) is None:
        return False
    r = stops.row_of.get(user, -1)
    if r >= 0 and user not in stops.before:
        stops.before[user] = row_standing(stops.U, r)
    return True


def _has_lists(profiles: dict[str, Profile], user: str) -> bool:
    """Whether ``user``'s profile keeps velocity lists (kept with velocity counts off)."""
    p = profiles.get(user)
    return p is not None and bool(p.v_events or p.v_purchases or p.v_items)

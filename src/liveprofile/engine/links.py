"""Identity links, erasures and expiry on the compiled path.

The kernel (:mod:`liveprofile.engine.kernel`) runs the events; what ends or joins profiles
(:mod:`liveprofile.engine.lifecycle`) stays in Python, and runs between the kernel's stretches of
events. :func:`next_stop` finds the next event that needs such work: a login (an
event linking an anonymous id to a user id), an operator's ``$merge``, an erasure, or an event
whose user has been idle past ``run.profile_ttl``. :class:`Stops` runs the kernel up to it,
moves the watermark to the event's time (closing the pending examples it
makes due), writes the rows concerned back to their profiles, lets the Python lifecycle link,
erase or delete them, reloads the rows, and points the later events of the anonymous ids whose
link changed at the user they now belong to. Links are rare in a stream (about one event in a
hundred in a shop where visitors log in at their first purchase), so the bulk of the events run
compiled. The commonest login, a visitor into a user id without a profile, needs no stop: the
kernel folds it itself (:mod:`liveprofile.engine.loginrun`; after a ``$merge``, which stops,
the later logins are planned again from the links it left); nor
does a login into a user who has a profile, whose rows the kernel merges in place
(:mod:`liveprofile.engine.foldinto`), with no profile written back or read; nor do most erasures
and expiries: the kernel empties the rows itself and the lifecycle deletes the objects after the
call (:mod:`liveprofile.engine.droprows`). What the kernel leaves to a stop runs there.

The velocity counts and anomaly scores of the events, in the batch's order, are
:class:`~liveprofile.engine.riskcounts.RiskCounts`' (:mod:`liveprofile.engine.riskcounts`).

>>> import numpy as np
>>> ok = np.ones(3, np.bool_)
>>> stops = np.array([False, False, True])
>>> unused = dict.fromkeys(set(Events._fields) - {"ok", "urow", "ts"})
>>> ev = Events(ok=ok, urow=np.zeros(3, np.int64), ts=np.array([1.0, 3.0, 4.0]), **unused)
>>> def idle():  # one user row, with a profile last seen at time 0
...     return Idle(exists=np.ones(1, np.bool_), last=np.zeros(1))
>>> int(next_stop(ev, ok, stops, idle(), 0, -1, 0.0, np.inf))
2
>>> int(next_stop(ev, ok, stops, idle(), 0, -1, 0.0, 1.5))  # idle past the TTL
1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from liveprofile.engine import droprows, kernel, loginrun
from liveprofile.engine import layout as L
from liveprofile.engine.codes import CodeTables
from liveprofile.engine.foldinto import fold_profile, unwritten, widen
from liveprofile.engine.foldnew import fold_visitor
from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.lifecycle import StepResult
from liveprofile.engine.loginrun import run_with_folds
from liveprofile.engine.machinecode import compiled_for
from liveprofile.engine.owners import expire_owner
from liveprofile.engine.records import Events, Users
from liveprofile.engine.resident import ResidentUsers
from liveprofile.engine.riskcounts import RiskCounts, StandIns
from liveprofile.engine.rowio import load_users, store_users
from liveprofile.engine.state import PipelineState
from liveprofile.engine.step import Step
from liveprofile.engine.visitors import BatchIds
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import COMMANDS, FORGET, Event
from liveprofile.profile.population import Standing
from liveprofile.profile.state import Profile

I64 = npt.NDArray[np.int64]


class Idle(NamedTuple):
    """Per user row: whether it has a profile, and its last event time."""

    exists: Any
    last: Any

    @classmethod
    def of(cls, U: Users) -> Idle:
        """The rows of ``U`` as they are (copies, which :func:`next_stop` advances)."""
        return cls(U.pi[:, L.P_EXISTS].astype(np.bool_), U.pf[:, L.P_LAST].copy())


@numba.njit(cache=True, nogil=True)
def next_stop(ev, ok, stops, idle, start, skip, wm, ttl):  # type: ignore[no-untyped-def]
    """The first event of ``ev`` (:class:`~liveprofile.engine.records.Events`, whose ``ok``
    marks the events applied) from ``start`` on, other than ``skip`` (handled already), that
    ``ok`` lets pass and that is marked in ``stops`` or whose user's profile is idle past
    ``ttl`` as of the watermark then; the number of events if none. ``idle`` (:class:`Idle`)
    is advanced over the events passed."""
    applied, urow, ts = ev.ok, ev.urow, ev.ts
    exists, last = idle.exists, idle.last
    n = ok.shape[0]
    for e in range(start, n):
        if not ok[e]:
            continue
        t = ts[e]
        if t > wm:
            wm = t
        if e != skip:
            if stops[e]:
                return e
            if applied[e] and exists[urow[e]] and last[urow[e]] + ttl < wm:
                return e
        if applied[e]:
            u = urow[e]
            if not exists[u]:
                exists[u] = True
                last[u] = t
            elif t > last[u]:
                last[u] = t
    return n


class Stops:
    """Runs a batch through the kernel with the Python lifecycle at its stops (see the module's
    docstring). ``names``: the user of each event (changed for the later events of an anonymous
    id whose link changes); ``users``: the batch's user rows by name."""

    def __init__(
        self,
        base: Step,
        tables: CodeTables,
        state: PipelineState,
        out: StepResult,
        before: dict[str, Standing | None],
        run: tuple[Any, ...],
        events: Sequence[Event],
        names: list[str],
        users: list[str],
        ids: BatchIds | None = None,
    ) -> None:
        self.base, self.tables, self.state, self.out, self.before = base, tables, state, out, before
        ev, codes, tasks, params, U, items, pool, ops, outputs = run
        self.codes = codes._replace(owner_row=codes.owner_row.copy())
        self.ev, self.tasks, self.params = ev, tasks, params
        self.U: Users = U
        self.items, self.pool, self.ops, self.outputs = items, pool, ops, outputs
        self.events, self.names, self.users = events, names, users
        self.ids = ids
        ucode = tables.users.code
        self.row_of = {u: r for r, u in enumerate(users)}
        n = len(events)
        #: per event (not a command), the code of the id it names (-1: none)
        self.visitor = np.full(n, -1, np.int64)
        self.consumed = np.zeros(n, np.bool_)  # commands: the lifecycle's work only
        if not (isinstance(events, EventColumns) and events.plain):  # plain: no links
            if ids is None:
                ids = BatchIds.of(events)
                named = map(ucode.get, ids.user, repeat(-1))
                self.visitor[:] = np.fromiter(named, np.int64, n)
            else:  # the user of each event, but for those moved to the user linked to
                self.visitor[:] = ev.ucode
                user = ids.user
                self.visitor[ids.moved] = [ucode.get(user[k], -1) for k in ids.moved]
            # the user id it names, whose link a merge or login in the batch may change
            self.consumed[:] = ids.command
            self.visitor[self.consumed] = -1
        #: users whose profile was deleted (True) or made (False) by the lifecycle at an event:
        #: whether they count as anonymous visitors from there on
        self.remade: dict[str, tuple[int, bool]] = {}
        #: the objects velocity counts go on: the profile, or a stand-in until it is made
        self.held = StandIns(state.profiles)
        self.risk: RiskCounts | None = None
        #: the anomaly detector learns from every event in turn: risk counts are counted in
        #: the batch's order, on stand-ins for the profiles not made yet (``held``);
        #: velocity counts alone only in each profile's order, on the profiles
        self.in_order = state.anomaly is not None
        #: events at which the Python lifecycle ran; of them, logins folded on the rows
        self.stopped = self.folded = 0
        #: of them, the events at which the kernel returned to Python for it
        self.paused = 0
        #: erasures and expiries the kernel took without a stop (:mod:`.droprows`)
        self.dropped = 0
        #: (records so far, row, row folded into or -1, its tasks with a score): see :meth:`_cut`
        self.cuts: list[tuple[int, int, int, frozenset[str]]] = []
        self._run: Callable[..., None] | None = None
        self._advance: Callable[..., None] | None = None
        self._fold_rows: Callable[..., None] | None = None
        self._fold_into: Callable[..., None] | None = None
        self._folding: Callable[..., Any] | None = None
        self._by_visitor: tuple[I64, I64] | None = None
        self._last_named: dict[int, int] | None = None

    def run(self, stops: Any, ttl: float, risk: RiskCounts) -> Users:
        """Run the batch; returns the user rows (widened if a merged profile needed room)."""
        self.risk = risk
        ev, n = self.ev, len(self.ev.ok)
        fast, ids, commands = None, self.ids, False
        drops = droprows.plan(self, ids, stops, ttl)
        # with a TTL the folds need the drops' plan (expiry); a command the kernel does not take
        # stops it: folds up to the first one, then planned again after each (run_with_folds)
        if ids is not None and (drops is not None or ttl == float("inf")):
            untaken = ids.command if drops is None else ids.command & ~drops.erase
            fast = loginrun.fast_logins(self, ids, stops, bool(risk.velocity), untaken)
            commands = bool(untaken.any())
        if fast is not None or drops is not None or commands:
            return run_with_folds(self, stops, fast, drops)
        ok = ev.ok | stops  # applied, or consumed by the lifecycle (moving the watermark)
        start, skip = 0, -1
        while True:
            wm = float(self.params.fp[L.FP_WATERMARK])
            stop = next_stop(ev, ok, stops, Idle.of(self.U), start, skip, wm, ttl)
            if stop > start:
                self._kernel(start, stop)
            if stop >= n:
                return self.U
            self._stop(stop, ttl)
            start, skip = stop, stop

    def _visitors(self) -> tuple[I64, I64]:
        """The events of each id named, found by bisection: their order, and the codes."""
        if self._by_visitor is None:
            order = np.argsort(self.visitor, kind="stable")
            self._by_visitor = order, self.visitor[order]
        return self._by_visitor

    def _kernel(self, lo: int, hi: int) -> None:
        ev = self.ev
        part = Events._make([*(a[lo:hi] for a in ev[:9]), ev.tp_start[lo : hi + 1], ev.tp_code])
        args = (
            part, self.codes, self.tasks, self.params, self.U, self.items, self.pool, self.ops,
            self.outputs,
        )  # fmt: skip
        if self._run is None:
            self._run = compiled_for(kernel.run, args)
        self._run(*args)

    def _stop(self, e: int, ttl: float) -> None:
        """The Python lifecycle's work at event ``e``."""
        self.stopped += 1
        self.paused += 1
        event, ts = self.events[e], float(self.ev.ts[e])
        args = (
            self.codes, self.tasks, self.params, self.U, self.items, self.pool, self.ops,
            self.outputs, ts,
        )  # fmt: skip
        if self._advance is None:
            self._advance = compiled_for(kernel.advance, args)
        self._advance(*args)
        assert self.risk is not None
        if self.in_order:
            self.risk.upto(e)
        base, state, out, before = self.base, self.state, self.out, self.before
        aliases = state.aliases
        anon, user = event.anonymous_id, event.user
        if event.type != FORGET:  # a visitor's link, or a user merged into another
            if user in aliases and ttl != float("inf"):
                expire_owner(self, e, user, ttl)
            user = aliases.get(user, user)
        if event.type == FORGET:  # a profile erased needs no writing back
            erase = lambda: base._erase(state, user, out, before)  # noqa: E731
            self._change(e, [user], erase, flush=user in aliases or not unwritten(self, user))
            return
        if anon is not None and anon != user and aliases.get(anon) != user:
            a: str = anon
            merge = event.type in COMMANDS
            if (not merge and fold_visitor(self, e, a, user, ts, ttl)) or fold_profile(
                self, e, a, user, ts, ttl, merge
            ):  # folded on the rows
                if not merge:
                    self._expire_at(e, ttl)
                return
            wm = float(self.params.fp[L.FP_WATERMARK])
            folds: dict[int, Any] = {}

            def fold() -> None:
                base._fold(state, a, user, ts, wm, out, before, folds, merge=merge)

            self._change(e, [a, user], fold, a)
            if folds:  # the visitor's profile went into the user's: so do its scores
                ((_, had, _),) = folds.values()
                self._cut(self.row_of.get(a, -1), self.row_of.get(user, -1), had)
            self._cut(self.row_of.get(a, -1))
        if event.type in COMMANDS:  # a $merge: nothing more
            return
        self._expire_at(e, ttl)

    def _expire_at(self, e: int, ttl: float) -> None:
        """Event ``e``'s user idle past ``ttl``: the profile expires before the event."""
        r = int(self.ev.urow[e])
        U = self.U
        if U.pi[r, L.P_EXISTS] and U.pf[r, L.P_LAST] + ttl < self.params.fp[L.FP_WATERMARK]:
            who = self.names[e]
            at = float(self.params.fp[L.FP_WATERMARK])
            base, state, out, before = self.base, self.state, self.out, self.before

            def expire() -> None:
                p = peek(state.profiles, who)
                assert p is not None
                base._delete(state, p, at, out, before, announce=True)

            self._change(e, [who], expire, flush=not unwritten(self, who))

    def _cut(self, row: int, into: int = -1, had: frozenset[str] = frozenset()) -> None:
        """The scores of ``row``'s records so far do not stay on it: its profile was replaced
        (``into`` -1: they are dropped, as they went to the profile that is gone) or folded into
        ``into``'s (they pass to it for the tasks it had no score of, see ``step._score``)."""
        if row >= 0:
            self.cuts.append((int(self.outputs.res[2]), row, into, had))

    def _change(
        self,
        e: int,
        who: list[str],
        change: Callable[[], None],
        folded: str | None = None,
        flush: bool = True,
    ) -> None:
        """Write the rows of ``who`` back, make the ``change``, reload them; then follow the
        identity links it made or removed. The scores of a profile replaced by the change stay
        with it (:meth:`_cut`); those of ``folded`` are the caller's to pass on."""
        rows = [self.row_of.get(u, -1) for u in who]
        if flush:
            self._flush(rows)
        if not self.in_order:
            assert self.risk is not None
            self.risk.rows([r for r in rows if r >= 0], e)
        out, profiles = self.out, self.state.profiles
        had = {u: u in profiles for u in who}
        objects = {u: peek(profiles, u) for u in who}
        saved, out.links = out.links, {}
        try:
            change()
        finally:
            changed, out.links = out.links, saved
            saved.update(changed)
        for u in who:
            r = self.row_of.get(u, -1)
            p = profiles.get(u)
            if u != folded and objects[u] is not None and p is not objects[u]:
                self._cut(r)
            if p is None:
                self.held.pop(u, None)
                self.remade[u] = (e, True)
            else:
                self.held[u] = p
                if not had[u]:
                    self.remade[u] = (e, False)
            if r >= 0:
                self._reload(r, p)
                assert self.risk is not None
                self.risk.reset(r, p)
        for anon in changed:
            self._follow(anon, e)

    def _flush(self, rows: list[int]) -> None:
        """Write rows changed by the kernel back to their profiles (scores come at the end)."""
        U = self.U
        rows = [r for r in rows if r >= 0 and U.touched[r]]
        if not rows:
            return
        if len(rows) == 1:  # most stops: views of the one row
            r = rows[0]
            part = Users(*(a[r : r + 1] for a in U))
        else:
            part = Users(*(a[rows] for a in U))
        nt = len(self.tables.task_names)
        scores = (np.full((len(rows), nt), np.nan), np.full((len(rows), nt), -1, np.int64))
        names = [self.users[r] for r in rows]
        store_users(self.tables, self.state.profiles, names, part, scores)
        for u in names:
            self.held.take(u, self.state.profiles[u])

    def _reload(self, r: int, p: Profile | None) -> None:
        """Row ``r`` from profile ``p`` (None: empty)."""
        U = self.U
        touched = bool(U.touched[r]) and p is not None  # its scores are written at the end
        if p is None:
            one = None
        else:
            one = load_users(self.tables, self.state.profiles, [p.user], ResidentUsers(0))
            U = widen(self, {name: getattr(one, name).shape[-1] for name in Users._fields})
        for name in Users._fields:
            a = getattr(U, name)
            src = None if one is None else getattr(one, name)[0]
            a[r] = -1 if name == "first" else 0
            if name == "pf":
                a[r, L.P_LASTPUR] = np.nan
            if src is not None:
                if a.ndim == 2:
                    a[r, : src.shape[0]] = src
                else:
                    a[r] = src
        U.touched[r] = touched

    def _follow(self, anon: str, e: int) -> None:
        """Point the events after ``e`` of visitor ``anon``, and the outcomes of its pending
        examples, at the user it is now linked to (or back at itself)."""
        ucode = self.tables.users.code
        c = ucode.get(anon)
        if c is None:
            return
        owner = self.state.aliases.get(anon, anon)
        r = self.row_of.get(owner, -1)
        self.codes.owner_row[c] = r
        if self._last_named is None:  # each id's last event (most ids have none after a login)
            self._last_named = {c: k for k, c in enumerate(self.visitor.tolist())}
        if self._last_named.get(c, -1) <= e:
            return
        order, codes = self._visitors()
        mine = order[codes.searchsorted(c) : codes.searchsorted(c, "right")]
        later = mine[mine > e]
        if not len(later):
            return
        ev = self.ev
        ev.urow[later] = r
        assert self.risk is not None
        self.risk.moved(later, r)
        ev.ucode[later] = ucode[owner]
        for k in later.tolist():
            self.names[k] = owner

    def known(self, visitors: dict[str, bool], applied: list[int]) -> None:
        """Mark in ``visitors`` the users who stop being anonymous visitors (see
        ``visitors.known_events``), each counted from its profile's last re-making."""
        events, names, remade = self.events, self.names, self.remade
        for u, (_, anonymous) in remade.items():
            visitors[u] = anonymous
        # only the events of users who are visitors now can change that
        maybe = {u for u, anonymous in visitors.items() if anonymous}
        if not maybe or not applied:
            return
        n = len(names)
        mine = np.fromiter(map(maybe.__contains__, names), np.bool_, n)
        at = np.zeros(n, np.bool_)
        at[applied] = True
        candidates = np.flatnonzero(mine & at).tolist()
        if self.ids is None:
            other = [k for k in candidates if events[k].anonymous_id != names[k]]
        else:
            anons = self.ids.anon
            other = [k for k in candidates if anons[k] != names[k]]
        # a visitor's own events (most) change nothing; whether another does depends on the
        # event alone, so they are taken in any order
        for k in other:
            user = names[k]
            if visitors[user] and k >= remade.get(user, (-1, True))[0]:
                visitors[user] = False

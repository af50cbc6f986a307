"""The compiled path of the step: a batch laid out as named arrays and run by :mod:`.kernel`.

:class:`CompiledStep` is the step (the only one), for every pipeline and batch: identity links,
erasures and expiry are the Python lifecycle's work between stretches of events the kernel
runs (:mod:`.links`), velocity counts and anomaly scores are counted after the kernel, in the
order of the events. Profiles stay :class:`~liveprofile.profile.state.Profile` objects between
batches, as the runners load and commit them (:mod:`.rowio`), their kernel fields held as bytes
until read (:mod:`.lazyprofiles`); item statistics and the open pending examples (:mod:`.pool`)
stay in arrays owned by this class, handed back to the state's tasks when another state comes
(:meth:`release`). Strings get integer codes once (:mod:`.codes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress
from typing import cast

import numpy as np
import numpy.typing as npt

from liveprofile.engine import kernel
from liveprofile.engine import layout as L
from liveprofile.engine.codes import CodeTables, grow
from liveprofile.engine.convroom import linked_users
from liveprofile.engine.kernelargs import batch_events, buffers, empty_items, step_params
from liveprofile.engine.lazyprofiles import ProfileMap, peek
from liveprofile.engine.lifecycle import StepResult
from liveprofile.engine.links import Idle, Stops, next_stop
from liveprofile.engine.packing import encode_items
from liveprofile.engine.pool import PendingPool
from liveprofile.engine.profilerows import KernelBytes
from liveprofile.engine.records import Events, Items, Ops, Outputs, Users
from liveprofile.engine.resident import ResidentUsers
from liveprofile.engine.riskcounts import RiskCounts
from liveprofile.engine.rowio import hold_items, load_users, store_users
from liveprofile.engine.rowops import heap_due
from liveprofile.engine.scorecuts import cut_array, cut_scores
from liveprofile.engine.state import PipelineState
from liveprofile.engine.step import Step
from liveprofile.engine.velocity import count_velocity
from liveprofile.engine.visitors import BatchIds, as_users, known_events
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import Event
from liveprofile.learn.base import ArrayOps, run_ops
from liveprofile.learn.delayed import FNC, MODES, fnc_correct_many
from liveprofile.learn.examples import ExampleLog
from liveprofile.learn.regression import run_regression_ops
from liveprofile.learn.tasks import PendingColumns, PendingLog
from liveprofile.profile.population import Standing, standing

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
#: a boolean per event
Bools = npt.NDArray[np.bool_]


class CompiledStep:
    """The step over arrays; see the module's docstring."""

    def __init__(self, base: Step) -> None:
        #: the Python work of a batch around the kernel (lifecycle, traits, segments)
        self.base = base
        config = base.config
        self.updater = base.updater
        self.names = [t.name for t in config.tasks]
        self.tables = CodeTables(config, base.features)
        self.params = step_params(base)
        #: item statistics by item code, kept across batches while this owns the state
        self.items = empty_items(0, len(self.names))
        self.held = np.zeros(0, np.bool_)
        self.held_items: set[str] = set()
        #: the rows of the users seen most recently, as the steps left them
        self.resident = ResidentUsers(config.run.hot_profiles)
        #: the bytes of the kernel fields of the profiles a batch wrote back, for its commit
        self.kernel_bytes = KernelBytes()
        self.pool = PendingPool(self.tables)
        self.owner: PipelineState | None = None
        #: the last batch's prediction per record (for the examples it logs)
        self._p_rec: F64 = np.zeros(0)
        #: events at which the Python lifecycle ran between the kernel's stretches (links,
        #: erasures, expiry), since this step was made
        self.stopped = 0
        #: of them, the events at which the kernel returned to Python for it
        self.paused = 0
        #: erasures and expiries the kernel took itself, without a stop (:mod:`.droprows`)
        self.dropped = 0
        #: the last answer of :meth:`due_keys` (asked up to three times a batch), until the
        #: pending examples change
        self._due: tuple[PipelineState, float, set[str], set[str]] | None = None

    def _grow_items(self) -> None:
        n = len(self.tables.items)
        if n > self.held.shape[0]:
            self.items = Items(*(grow(a, n) for a in self.items))
            self.held = grow(self.held, n)

    # -- ownership of the state ----------------------------------------------------------------

    def _adopt(self, state: PipelineState) -> None:
        """Take over the open pending examples of ``state``'s tasks."""
        self.owner = state
        self._due = None
        delayed, names = self.tables.delayed, self.names
        self.pool.adopt(
            {t: state.tasks[name].take_pending() for t, name in enumerate(names) if delayed[t]},
            state.checkpoint.watermark,
        )
        self._grow_items()

    def release(self) -> None:
        """Hand the open pending examples back to the owner's tasks (another state comes)."""
        state = self.owner
        if state is None:
            return
        for t, name in enumerate(self.names):
            if self.tables.delayed[t]:
                state.tasks[name].give_pending(*self.pool.hand_back(t), state.checkpoint.watermark)
        # the item statistics are in the store (and the state's resting copies) as committed
        self.held[:] = False
        self.held_items.clear()
        # a batch that failed half-way leaves items marked: they would be written next time
        # with statistics the store may no longer have
        self.items.touched[:] = False
        self.resident.clear()
        self.owner = None
        self._due = None

    def due_keys(self, state: PipelineState, horizon: float) -> tuple[set[str], set[str]]:
        """Users and items of the pending examples that close before ``horizon``."""
        if self.owner is not state:
            return set(), set()
        cached = self._due
        if cached is not None and cached[0] is state and cached[1] == horizon:
            return set(cached[2]), set(cached[3])
        users: set[str] = set()
        items: set[str] = set()
        a, tables = self.pool.arrays, self.tables
        for t in range(len(self.names)):
            due = heap_due(a.heap[t], a.hlen[t], a.deadline, horizon)
            users.update(tables.users.names[c] for c in np.unique(a.user[due]))
            items.update(tables.items.names[c] for c in np.unique(a.item[due]) if c >= 0)
        self._due = (state, horizon, users, items)
        return set(users), set(items)

    # -- the step ------------------------------------------------------------------------------

    def step(self, state: PipelineState, events: Sequence[Event]) -> StepResult:
        if self.owner is not state:
            if self.owner is not None:
                self.release()
            self._adopt(state)
        out = StepResult()
        ckpt = state.checkpoint
        # plain events (columns): no links, no commands; otherwise the ids, read once
        plain = isinstance(events, EventColumns) and events.plain
        ids = None if plain else self.base.take_ids(events)
        cols = EventColumns.of(as_users(events, state.aliases, ids))
        ok = np.array(state.dedup.add_many(cols.event_id), dtype=np.bool_)
        out.duplicates = len(cols) - int(ok.sum())
        marks = None if ids is None else ids.stop_marks(ok)
        ttl = self.base.ttl
        is_command = None if marks is None or ids is None else ids.command
        visitor_ids = _visitor_ids(state, ids, cols, is_command, marks is not None, ttl)
        kernel_ok = ok
        if is_command is not None:  # commands are the lifecycle's work only
            kernel_ok = ok & ~is_command
        # the pending examples due in this batch bring their users and items
        due_users, due_items = self.due_keys(state, self.base.horizon(state, cols))
        self._due = None  # the kernel closes them
        if state.aliases:  # outcomes count on the user an alias is linked to
            due_users |= {state.aliases.get(u, u) for u in due_users}
        batch_users = list(dict.fromkeys([*cols.user, *sorted(due_users), *visitor_ids]))
        present = [i for i in cols.item_id if i is not None]
        batch_items = list(dict.fromkeys([*present, *sorted(due_items)]))
        ev, user_row = batch_events(
            self.tables, self.resident, state.profiles, cols, kernel_ok, batch_users, batch_items
        )
        self._grow_items()
        U = load_users(self.tables, state.profiles, batch_users, self.resident)
        self._hold(state, batch_items)
        before, visitors = _standings(state, cols, ok, kernel_ok, visitor_ids)
        applied = np.flatnonzero(kernel_ok).tolist()
        moved = marks is not None and self.tables.regression.any()  # a regression task's room
        linked = linked_users(events, state.aliases) if moved else ()
        ops, outputs = buffers(
            self.pool, self.tables, len(self.names), self.updater.behaviour.width, ev, linked
        )
        self.params.fp[L.FP_WATERMARK] = ckpt.watermark
        held = self.held[: len(self.tables.items)]
        item_row = np.where(held, np.arange(len(held)), -1)  # items keep their codes as rows
        # the links the kernel reads: of the users of pending examples it may close
        aliases = state.aliases
        links = {u: aliases[u] for u in batch_users if u in aliases} if aliases else aliases
        codes = self.tables.by_code(user_row, item_row, links)
        tasks = self.tables.tasks()
        inf = float("inf")
        if marks is None and ttl is not None:
            marks = _expiry_marks(ok, ev, U, ckpt.watermark, ttl)
        names = cols.user
        stops = None
        if marks is not None:
            names = list(cols.user)  # a link or its removal may move visitors' later events
            run = (ev, codes, tasks, self.params, U, self.items, self.pool.arrays, ops, outputs)
            stops = Stops(
                self.base, self.tables, state, out, before, run, events, names, batch_users, ids
            )
        # as the profiles were before the events, for the velocity counts below
        risk = RiskCounts(
            self.updater.risk, state.anomaly, self.tables, ev, names, U,
            state.profiles.__getitem__ if stops is None or not stops.in_order
            else stops.held.profile_of,
        )  # fmt: skip
        if stops is None:
            kernel.run(ev, codes, tasks, self.params, U, self.items, self.pool.arrays, ops, outputs)
        else:
            assert marks is not None
            U = stops.run(marks, inf if ttl is None else ttl, risk)
            self.stopped += stops.stopped
            self.paused += stops.paused
            self.dropped += stops.dropped
        out.applied, out.examples = int(outputs.res[0]), int(outputs.res[1])
        out.applied += int((ok & ~kernel_ok).sum())  # commands
        cuts = [] if stops is None else stops.cuts
        scores = self._learn(state, ops, outputs, user_row, len(batch_users), cuts)
        if self.base.log_examples:
            out.learned = self._examples(ops, outputs, batch_users)
        kept = self.kernel_bytes
        # held profiles: what reads them later in the batch (the stops, finish) decodes them
        lazy = kept is not None and isinstance(state.profiles, ProfileMap)
        out.users |= store_users(self.tables, state.profiles, batch_users, U, scores, kept, lazy)
        self.resident.keep(batch_users, U)
        if stops is not None:
            stops.known(visitors, applied)
        elif visitors:
            known_events(visitors, events, cols, applied, state.aliases)
        for u, anonymous in visitors.items():
            p = peek(state.profiles, u)
            if p is not None:  # None: an alias (a visitor's id), or deleted in the batch
                p.anonymous = anonymous
        if self.base.config.risk.velocity or state.anomaly is not None:
            # what the stops left uncounted; the profiles as they are unless the detector
            # scores (then on the stops' stand-ins)
            uncounted = np.flatnonzero(ev.ok & ~risk.counted)
            as_they_are = None if state.anomaly is not None else state.profiles
            count_velocity(risk, uncounted, as_they_are, lazy)
        if stops is not None:
            stops.held.finish()
        out.item_rows = self._item_rows()
        out.pending.update(self._pending_logs(outputs))
        self.pool.give_back(outputs.freed[: outputs.res[3]])
        watermark = float(self.params.fp[L.FP_WATERMARK])
        swept = self.base.sweep_due(ckpt.watermark, watermark)
        ckpt.watermark = watermark
        ckpt.events += out.applied
        ckpt.duplicates += out.duplicates
        self.base.finish(state, out, before, swept)
        self.resident.forget(out.deleted)  # rows of deleted profiles are read again
        if lazy:  # the held profiles' rows
            out.profile_rows = cast(ProfileMap, state.profiles).rows(out.users)
        elif kept is not None:
            out.profile_rows = kept.rows(state.profiles, out.users)
            kept.clear()
        return out

    def _pending_logs(self, outputs: Outputs) -> dict[str, PendingLog | PendingColumns]:
        """Each task's pending examples opened and converted by the kernel in this batch."""
        logs: dict[str, PendingLog | PendingColumns] = {}
        for t, name in enumerate(self.names):
            if self.tables.delayed[t]:
                made = outputs.created[t, : outputs.n_created[t]]
                n_conv = outputs.n_converted[t]
                converted = outputs.converted[t, :n_conv]
                values = outputs.conv_value[t, :n_conv] if self.tables.regression[t] else None
                logs[name] = self.pool.columns(t, made, converted, values)
            else:
                logs[name] = PendingLog([], [])
        return logs

    def _hold(self, state: PipelineState, items: list[str]) -> None:
        """Bring the statistics of ``items`` not held yet into the item arrays."""
        code = self.tables.items.code
        new = {code[i]: i for i in items if not self.held[code[i]]}
        if new:
            hold_items(self.tables, self.items, self.held, state.items, new)
            self.held_items.update(new.values())

    def _learn(
        self,
        state: PipelineState,
        ops: Ops,
        outputs: Outputs,
        user_row: I64,
        n_users: int,
        cuts: list[tuple[int, int, int, frozenset[str]]],
    ) -> tuple[F64, I64]:
        """Run the models, then predictions back to metrics and pending examples; returns the
        last score per user row and task, and the record that first scored it. ``cuts``: rows
        whose profile was replaced or folded into another's at a stop (``links.Stops._cut``)."""
        preds = []
        for t, name in enumerate(self.names):
            task = state.tasks[name]
            k = int(ops.n[t])
            batch = ArrayOps(
                ops.kind[t, :k],
                ops.start[t, : k + 1],
                ops.idx[t, : ops.start[t, k]],
                ops.val[t, : ops.start[t, k]],
                ops.y[t, :k],
            )
            assert task.learner is not None
            learn = run_regression_ops if task.regression else run_ops
            b = learn(task.learner, batch) if k else np.zeros(0)
            fnc = self.tables.feedback[t] == MODES[FNC]
            preds.append(fnc_correct_many(b) if fnc else b)  # as served
        n_rec = int(outputs.res[2])
        rec_kind, rec_task, rec_k, rec_ref = outputs.recs[:n_rec].T
        rec_ts, rec_label = outputs.rec_ts[:n_rec], outputs.rec_label[:n_rec]
        p_rec = np.full(n_rec, np.nan)
        nt = len(self.names)
        for t in range(nt):
            m = (rec_task == t) & (rec_kind != L.R_RESOLVED)
            p_rec[m] = preds[t][rec_k[m]]
        pool_p, pool_user = self.pool.p, self.pool.arrays.user
        opened = rec_kind == L.R_OPENED
        pool_p[rec_ref[opened]] = p_rec[opened]
        resolved = rec_kind == L.R_RESOLVED
        p_rec[resolved] = pool_p[rec_ref[resolved]]
        self._p_rec = p_rec
        score_rows = np.where(opened, user_row[pool_user[np.where(opened, rec_ref, 0)]], rec_ref)
        if cuts:
            cut_scores(score_rows, rec_task, resolved, *cut_array(cuts, self.names))
        scores = np.full((n_users, nt), np.nan)
        scored = np.full((n_users, nt), -1, np.int64)
        regression = self.tables.regression
        for t, name in enumerate(self.names):
            at = np.flatnonzero((rec_task == t) & ~resolved & (score_rows >= 0))
            rows = score_rows[at]
            # each user's last score of the task is kept, its first one orders new keys
            rows_r = rows[::-1]
            uniq, last = np.unique(rows_r, return_index=True)
            scores[uniq, t] = p_rec[at[::-1][last]]
            uniq, firsts = np.unique(rows, return_index=True)
            scored[uniq, t] = at[firsts]
            learned = (rec_task == t) & (rec_kind != L.R_OPENED)
            y = self.pool.arrays.total[rec_ref[learned]] if regression[t] else rec_label[learned]
            state.tasks[name].metrics.record_many(p_rec[learned], y, rec_ts[learned])
        return scores, scored

    def _examples(self, ops: Ops, outputs: Outputs, batch_users: list[str]) -> ExampleLog:
        """The examples this batch learned, in order (for ``run.training_log``)."""
        log = ExampleLog()
        n_rec = int(outputs.res[2])
        pool, tables = self.pool.arrays, self.tables
        users = tables.users.names
        for r, (kind, t, k, ref) in enumerate(outputs.recs[:n_rec].tolist()):
            if kind == L.R_OPENED:
                continue
            p, label = float(self._p_rec[r]), bool(outputs.rec_label[r])
            if kind == L.R_IMMEDIATE:
                s, e = ops.start[t, k], ops.start[t, k + 1]
                ts = float(outputs.rec_ts[r])
                idx, val = ops.idx[t, s:e].tolist(), ops.val[t, s:e].tolist()
                log.add(self.names[t], batch_users[ref], None, ts, ts, float(label), p, idx, val)
                continue
            m = pool.flen[ref]
            y = float(pool.total[ref]) if self.tables.regression[t] else float(label)
            log.add(
                self.names[t],
                users[pool.user[ref]],
                tables.keys(t).names[pool.key[ref]],
                float(pool.open_ts[ref]),
                float(pool.deadline[ref]),
                y,
                p,
                pool.fidx[ref, :m].tolist(),
                pool.fval[ref, :m].tolist(),
            )
        return log

    def _item_rows(self) -> dict[str, bytes]:
        """The touched items' stored bytes, by item."""
        X = self.items
        touched = np.flatnonzero(X.touched)
        X.touched[touched] = False
        blobs = encode_items(touched, X, self.tables.topic_strings, self.tables.task_strings)
        names = self.tables.items.names
        return dict(zip([names[c] for c in touched.tolist()], blobs, strict=True))


def _visitor_ids(
    state: PipelineState,
    ids: BatchIds | None,
    cols: EventColumns,
    is_command: Bools | None,
    stops: bool,
    ttl: float | None,
) -> list[str]:
    """Visitors' anonymous ids the batch may move: a link made or removed in it may move their
    events (``ids``: the batch's ids, None for plain columns; ``stops``: the batch has events
    the lifecycle handles)."""
    if ids is None or not (stops or ttl is not None):
        return []
    visitor_ids: list[str] = ids.visitors()
    if state.aliases:
        get, users = state.aliases.get, cols.user
        if is_command is not None:
            # a merge into a user merged into another goes to the latter
            visitor_ids += [get(users[k], users[k]) for k in np.flatnonzero(is_command)]
        if ttl is not None or (is_command is not None and is_command.any()):
            # an erasure, expiry or merge may unlink or re-point visitors known already
            visitor_ids += [u for u in ids.user if u in state.aliases]
    return visitor_ids


def _standings(
    state: PipelineState,
    cols: EventColumns,
    ok: Bools,
    kernel_ok: Bools,
    visitor_ids: list[str],
) -> tuple[dict[str, Standing | None], dict[str, bool]]:
    """Each user's segment standing before the batch (None: no profile), and the users who may
    be anonymous visitors afterwards."""
    before: dict[str, Standing | None] = {}
    visitors: dict[str, bool] = {}
    for u in dict.fromkeys([*compress(cols.user, kernel_ok.tolist()), *visitor_ids]):
        p = peek(state.profiles, u)
        before[u] = None if p is None else standing(p)
        if p is None or p.anonymous:
            visitors[u] = True
    for k in np.flatnonzero(ok & ~kernel_ok).tolist():  # a merge's user may get a profile
        if (u := cols.user[k]) not in before:
            p = peek(state.profiles, u)
            before[u] = None if p is None else standing(p)
    return before, visitors


def _expiry_marks(ok: Bools, ev: Events, U: Users, watermark: float, ttl: float) -> Bools | None:
    """No event marked (the lifecycle still runs, for expiry) when a user idle past the TTL
    comes back in the batch, to be expired first; None when none does."""
    n = len(ok)
    nothing = np.zeros(n, np.bool_)
    if next_stop(ev._replace(ok=ok), ok, nothing, Idle.of(U), 0, -1, watermark, ttl) < n:
        return nothing
    return None

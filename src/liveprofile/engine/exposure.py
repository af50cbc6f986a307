"""Features of items shown to one user now, built by the compiled step's own feature functions.

Serving scores a (user, item) pair with the features the pipeline would build for an exposure of
the item to the user at scoring time. :class:`ExposureFeatures` builds them as the kernel does:
the profile is laid out as one :class:`~liveprofile.engine.records.Users` row
(:func:`~liveprofile.engine.rowio.load_users`), the candidates' statistics as
:class:`~liveprofile.engine.records.Items` rows (:func:`~liveprofile.engine.rowio.hold_items`),
each candidate is one event of the task's first type, and :func:`exposure_features` runs
:func:`~liveprofile.engine.featurize.shared_features` and
:func:`~liveprofile.engine.featurize.task_features` on them, the very functions that built the
examples the model learned from. So what a model learned from and what it scores with at request
time are one code. Under ``LIVEPROFILE_NO_JIT=1`` the same functions run as plain Python.

The readable names of the features (for the reasons of a score) come from the same tables
(:mod:`liveprofile.engine.featurenames`).

>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.engine.step import Step
>>> from liveprofile.profile.state import Profile
>>> step = Step(PipelineConfig())
>>> p = Profile("u1", 0.0, 0.0, 3600.0, n=2, decayed={"view": 1.5}, interests={"c1": 2.0})
>>> built = ExposureFeatures(step).build(step.config.tasks[0], "u1", p, ["i1"], [None], 7200.0)
>>> idx, val, names = built.explained(0)
>>> names[:4], len(idx) == len(val) == len(names)
(['bias', 'user=u1', 'type=rate', 'item=i1'], True)
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from liveprofile.config import TaskConfig
from liveprofile.engine.chains import task_key
from liveprofile.engine.codes import CodeTables
from liveprofile.engine.featurenames import FeatureNames
from liveprofile.engine.featurize import shared_features, task_features
from liveprofile.engine.jit import jit
from liveprofile.engine.kernelargs import empty_items, step_params
from liveprofile.engine.machinecode import compiled_for
from liveprofile.engine.records import ByCode, Events, Ops, Users
from liveprofile.engine.recycled import Recycled
from liveprofile.engine.resident import ResidentUsers
from liveprofile.engine.rowio import hold_items, load_users
from liveprofile.engine.step import Step
from liveprofile.learn.base import PREDICT, ArrayOps
from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import Profile

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
#: the code tables start afresh past this many users and items (a server meets every user)
CODES_LIMIT = 1_000_000
_NONE = np.zeros(0, np.int64)
#: requests of up to this many candidates (a score, a few) reuse their rows' and events' arrays;
#: the arrays of longer ones (recommendations, of varying counts) are made for them
RECYCLE = 8


@jit
def exposure_features(ev, codes, params, tasks, users, items, ops, t, out):  # type: ignore[no-untyped-def]
    """The features of task ``t``'s example for every event of ``ev``, as the kernel builds
    them: row ``e`` of ``out[0]`` / ``out[1]`` gets event ``e``'s indices and values
    (``out[2][e]`` of them), and ``out[3]`` / ``out[4]`` from ``out[5][e]`` to
    ``out[5][e + 1]`` the same features with colliding indices added up, in the order of their
    first appearance (``learn.base.sparse_example``)."""
    raw_idx, raw_val, raw_len, m_idx, m_val, m_start = out
    cur_idx = ops.cur_idx
    cur_val = ops.cur_val
    k = 0
    for e in range(ev.ts.shape[0]):
        key = task_key(tasks, ev, e, t) if tasks.delayed[t] else -1
        m = shared_features(ev, e, codes, params, users, items, ops)
        m = task_features(tasks, params, users, items, ops, t, key, ev.urow[e], ev.irow[e], m)
        raw_len[e] = m
        first = k
        for q in range(m):
            i = cur_idx[q]
            v = cur_val[q]
            raw_idx[e, q] = i
            raw_val[e, q] = v
            at = -1
            for r in range(first, k):
                if m_idx[r] == i:
                    at = r
                    break
            if at >= 0:
                m_val[at] += v
            else:
                m_idx[k] = i
                m_val[k] = 0.0 + v  # as a dict starting from 0.0 adds it
                k += 1
        m_start[e + 1] = k
    return k


class Exposures:
    """The features of one user's exposures to candidates (:meth:`ExposureFeatures.build`)."""

    def __init__(self, out: tuple[Any, ...], names: FeatureNames, strings: tuple[Any, ...]) -> None:
        self.raw_idx, self.raw_val, self.raw_len, self.idx, self.val, self.start = out
        self._names = names
        #: the code tables, the user, the event type, the items, their categories (None:
        #: none) and the profile's decayed counts' types
        self._strings = strings

    def __len__(self) -> int:
        return int(self.raw_len.shape[0])

    def example(self, j: int) -> tuple[list[int], list[float]]:
        """Candidate ``j``'s features as built (an index may appear twice)."""
        m = int(self.raw_len[j])
        return self.raw_idx[j, :m].tolist(), self.raw_val[j, :m].tolist()

    def merged(self, j: int) -> dict[Hashable, float]:
        """Candidate ``j``'s example as the model reads it (colliding indices added up)."""
        a, b = int(self.start[j]), int(self.start[j + 1])
        return dict(zip(self.idx[a:b].tolist(), self.val[a:b].tolist(), strict=True))

    def shared(self) -> Counter[tuple[int, float]]:
        """The (index, value) pairs every candidate has, as many times as each has them at
        least (the intersection of the candidates' multisets of pairs).

        >>> from liveprofile.config import PipelineConfig
        >>> from liveprofile.engine.step import Step
        >>> step = Step(PipelineConfig())
        >>> built = ExposureFeatures(step).build(step.config.tasks[0], "u", None, ["a", "b"],
        ...                                       [None, None], 0.0)
        >>> idx, val = built.example(0)
        >>> (idx[0], val[0]) in built.shared(), (idx[3], val[3]) in built.shared()  # bias, item
        (True, False)
        """
        if len(self) == 0:
            return Counter()
        idx, val = self.raw_idx, self.raw_val
        valid = np.arange(idx.shape[1])[None, :] < self.raw_len[:, None]
        out: Counter[tuple[int, float]] = Counter()
        for (i, v), c in Counter(zip(*self.example(0), strict=True)).items():
            least = int(((idx == i) & (val == v) & valid).sum(axis=1).min())
            if least > 0:
                out[(i, v)] = min(c, least)
        return out

    def predict_ops(self) -> ArrayOps:
        """One prediction per candidate, in order, on the merged examples (the arrays as
        built, not copied)."""
        n = len(self)
        end = int(self.start[n])
        kinds = np.full(n, PREDICT, np.int8)
        return ArrayOps(kinds, self.start, self.idx[:end], self.val[:end], np.zeros(n))

    def explained(self, j: int) -> tuple[list[int], list[float], list[str]]:
        """:meth:`example` with the readable name of every feature."""
        idx, val = self.example(j)
        return idx, val, self.names(j, idx)

    def names(self, j: int, idx: Sequence[int]) -> list[str]:
        """The readable names of features ``idx`` of candidate ``j``."""
        tables, user, kind, items, cats, kinds = self._strings
        cat = [] if cats[j] is None else [cats[j]]
        named = self._names.of_request(tables, user, kind, [items[j]], cat, kinds)
        return self._names.names(named, idx)


class ExposureFeatures:
    """Builds exposures' features on rows for a pipeline's step (see the module's docstring).

    Strings get codes once and keep them across requests (up to :data:`CODES_LIMIT`), as the
    compiled step's do; a lock keeps concurrent requests from interning at the same time.
    """

    def __init__(self, base: Step) -> None:
        self.base = base
        self.config = base.config
        self.params = step_params(base)
        self.names = FeatureNames(self.params, base.updater.behaviour)
        self._lock = threading.Lock()
        #: room for one example's features but its decayed counts, one per event type
        #: (``kernelargs.buffers`` with one topic per event)
        self._width = 48 + 2 + 2 * base.updater.behaviour.width
        #: the machine code of :func:`exposure_features` for the arguments :meth:`build`
        #: passes, found on the first call: every array there is made here, by the code tables
        #: or by ``load_users`` with one dtype, number of dimensions and C layout, so their
        #: kinds, and the code numba compiles for them, are those of the first call
        self._run: Any = None
        #: the example being built (``Ops.cur_idx``, ``cur_val``; the rest is not read)
        self._ops = _ops(0)
        #: keys a behaviour map holds before a row trims it
        self._behaviour_limit = base.updater.behaviour.limit
        self._tables = self._fresh()
        #: (the code tables and the arrays they were made of, ``_by_code``, ``tasks()``): see
        #: :meth:`_code_tables`
        self._tables_for: tuple[tuple[Any, ...], ByCode, Any] | None = None
        #: the user's row, recycled from request to request (:class:`Recycled`)
        self._users = Recycled(Users.empty)
        #: the candidates' rows, the same way
        self._items = Recycled(empty_items)
        #: the events of a request of ``n`` candidates, by ``n`` (see :meth:`_events`)
        self._rooms: dict[int, tuple[I64, F64, Events]] = {}

    def _fresh(self) -> CodeTables:
        return CodeTables(self.config, self.base.features)

    def build(
        self,
        task: TaskConfig,
        user: str,
        p: Profile | None,
        items: Sequence[str],
        stats: Sequence[ItemStats | None],
        ts: float,
    ) -> Exposures:
        """The features of ``task``'s example for each of ``items`` (``stats``: their
        statistics, None: none) shown to ``user`` (profile ``p``, None: none) at ``ts``: the
        event of ``task.on[0]`` with the item and its category the step would get."""
        with self._lock:
            tables = self._tables
            if len(tables.users) + len(tables.items) > CODES_LIMIT:
                tables = self._tables = self._fresh()
            return self._build(tables, task, user, p, items, stats, ts)

    def _build(
        self,
        tables: CodeTables,
        task: TaskConfig,
        user: str,
        p: Profile | None,
        items: Sequence[str],
        stats: Sequence[ItemStats | None],
        ts: float,
    ) -> Exposures:
        kind = task.on[0]
        cats = [None if s is None else s.category for s in stats]
        present = [c for c in cats if c is not None]
        row = None if p is None else self._read(p, items, present)
        _intern(tables, user, row, items, present, kind)
        t = tables.task_names.index(task.name)
        n = len(items)
        profiles = {} if row is None else {user: row}
        U = load_users(tables, profiles, [user], ResidentUsers(0), self._users.empty)
        tasks = len(tables.task_names)  # a few candidates' rows recycled, many allocated
        X = self._items.empty(n, tasks) if n <= RECYCLE else empty_items(n, tasks)
        hold_items(
            tables,
            X,
            np.zeros(n, np.bool_),
            {i: s for i, s in zip(items, stats, strict=True) if s is not None},
            dict(enumerate(items)),
        )
        ucode, icode, tcode = tables.users.code, tables.items.code, tables.topics.code
        ints, floats, ev = self._events(n)
        ints[1] = ucode[user]
        ints[3, :n] = [icode[i] for i in items]
        ints[4] = tables.types.code[kind]
        ints[5, :n] = [-1 if c is None else tcode[c] for c in cats]
        floats[0] = ts
        if len(present) < n:  # a candidate without a category has no topic
            topics = ev.cat >= 0
            tp_start = np.concatenate(([0], np.cumsum(topics)))
            ev = ev._replace(tp_start=tp_start, tp_code=ev.cat[topics])
        width = self._width + len(tables.types)
        ops = self._ops
        if ops.cur_idx.shape[0] != width:
            ops = self._ops = _ops(width)
        out = (
            np.zeros((n, width), np.int64),
            np.zeros((n, width)),
            np.zeros(n, np.int64),
            np.zeros(n * width, np.int64),
            np.zeros(n * width),
            np.zeros(n + 1, np.int64),
        )
        by_code, tasks = self._code_tables(tables)
        args = (ev, by_code, self.params, tasks, U, X, ops, t, out)
        run = self._run
        if run is None:  # the kinds of the arguments never change (see __init__)
            run = self._run = compiled_for(exposure_features, args)
        run(*args)
        kinds = [] if p is None else list(p.decayed)
        return Exposures(out, self.names, (tables, user, kind, items, cats, kinds))

    def _events(self, n: int) -> tuple[I64, F64, Events]:
        """Room for ``n`` events, kept for the next request of as many candidates (up to
        :data:`RECYCLE`; the lock is held while they are used): one block of ints and one of
        floats, a row per field (rows of a C array are C arrays), with what is the same for
        every request filled in; the events read every candidate's category as a topic."""
        room = self._rooms.get(n)
        if room is None:
            if len(self._rooms) >= RECYCLE:
                self._rooms.clear()
            ints = np.zeros((6, n + 1), np.int64)  # the user's row: 0
            ints[2] = np.arange(n + 1)  # each item's row
            floats = np.empty((2, n))
            floats[1] = np.nan
            ev = Events(
                ok=np.ones(n, np.bool_),
                urow=ints[0, :n],
                ucode=ints[1, :n],
                irow=ints[2, :n],
                icode=ints[3, :n],
                type=ints[4, :n],
                ts=floats[0],
                value=floats[1],
                cat=ints[5, :n],
                tp_start=ints[2],
                tp_code=ints[5, :n],
            )
            room = (ints, floats, ev)
            if n <= RECYCLE:
                self._rooms[n] = room
        return room

    def _code_tables(self, tables: CodeTables) -> tuple[ByCode, Any]:
        """The code tables as the feature functions read them, made again only when one of
        their arrays is another (grown for new strings, or the event types' tables made
        again); a new code's entries are written into the arrays in place."""
        arrays = (
            tables, tables.user_fidx, tables.user_part, tables.item_fidx, tables.topic_fidx,
            tables.topic_part, tables.topic_track, tables.type_tables, tables.ko_topic,
            tables.ko_item, tables.ko_user,
        )  # fmt: skip
        cached = self._tables_for
        if cached is None or any(a is not b for a, b in zip(arrays, cached[0], strict=True)):
            cached = self._tables_for = (arrays, _by_code(tables), tables.tasks())
        return cached[1], cached[2]

    def _read(self, p: Profile, items: Sequence[str], cats: list[str]) -> Profile:
        """``p`` with what the features of these exposures read: not its recent events, spend
        and counts per type (which a row lays out entry by entry), and of its behaviour maps
        the entries of the candidates' keys (a map the row would trim is left whole, to be
        trimmed alike)."""
        return msgspec.structs.replace(
            p,
            recent=[],
            spend={},
            counts={},
            behaviour_items=self._entries(p.behaviour_items, items),
            behaviour_categories=self._entries(p.behaviour_categories, cats),
        )

    def _entries(self, entries: dict[str, bytes], keys: Sequence[str]) -> dict[str, bytes]:
        if len(entries) > self._behaviour_limit:
            return entries
        return {k: entries[k] for k in keys if k in entries}


def _ops(width: int) -> Ops:
    return Ops(
        kind=np.zeros((1, 0), np.int8),
        start=np.zeros((1, 1), np.int64),
        idx=np.zeros((1, 0), np.int64),
        val=np.zeros((1, 0), np.float64),
        y=np.zeros((1, 0), np.float64),
        n=np.zeros(1, np.int64),
        cur_idx=np.empty(width, np.int64),
        cur_val=np.empty(width, np.float64),
    )


def _intern(
    tables: CodeTables,
    user: str,
    p: Profile | None,
    items: Sequence[str],
    categories: list[str],
    kind: str,
) -> None:
    """Codes for the request's strings and those the profile's row holds (as
    ``kernelargs.batch_events``)."""
    if p is None:
        tables.intern([user], items, categories, [kind])
        return
    held = [*items, *p.behaviour_items]
    kinds = [kind, *p.decayed, *p.counts]
    for _, k, item, _ in p.recent:
        kinds.append(k)
        if item is not None:
            held.append(item)
    tables.intern([user], held, [*categories, *p.interests, *p.behaviour_categories], kinds)


def _by_code(tables: CodeTables) -> ByCode:
    """The code tables the feature functions read (the rows and ranks they do not read left
    empty)."""
    type_fidx, type_dec, type_mon, type_w = tables.type_tables[:4]
    return ByCode(
        user_fidx=tables.user_fidx,
        user_part=tables.user_part,
        user_rank=_NONE,
        user_row=_NONE,
        owner_row=_NONE,
        item_fidx=tables.item_fidx,
        item_rank=_NONE,
        item_row=_NONE,
        topic_fidx=tables.topic_fidx,
        topic_part=tables.topic_part,
        topic_track=tables.topic_track,
        topic_rank=_NONE,
        type_fidx=type_fidx,
        type_dec=type_dec,
        type_monetary=type_mon,
        type_weight=type_w,
        type_rank=_NONE,
        type_beh=tables.type_tables[7],
    )

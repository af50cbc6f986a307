"""Integer codes for the strings of a stream, and the per-code tables the compiled step reads.

Users, items, topics and event types get a code on first sight; the feature indices, cross
hashes and key-outcome names of each code are computed once, with the Python feature builder's
and profile's own functions, into the tables of :class:`CodeTables`.

>>> codes = StringCodes()
>>> codes.add_missing(["b", "a", "b"])
['b', 'a']
>>> codes.code["a"], codes.rank().argsort().tolist()
(1, [1, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sortedcontainers import SortedList

from liveprofile.config import PipelineConfig
from liveprofile.engine.packing import StringTable
from liveprofile.engine.records import ByCode, Tasks
from liveprofile.features.hashing import FeatureBuilder
from liveprofile.learn.delayed import MODES, WAIT, op_flags
from liveprofile.profile.behaviour import BehaviourTracker
from liveprofile.profile.risk import velocity_item
from liveprofile.profile.state import key_outcome_name

I64 = npt.NDArray[np.int64]


#: labels lie strictly within (-LIMIT, LIMIT); a string past the last (or before the first)
#: is labelled STEP from it, so ids that arrive in order use the range up slowly
LIMIT, STEP = 1 << 62, 1 << 32


class StringCodes:
    """Integer codes for strings, in the order they were first seen."""

    def __init__(self) -> None:
        self.code: dict[str, int] = {}
        self.names: list[str] = []
        self._sorted: SortedList = SortedList()  # the strings of the codes ranked so far
        self._labels = np.zeros(64, np.int64)  # the labels of those codes (the first), then room
        #: how many times every string was labelled afresh (a gap ran out)
        self.relabelled = 0

    def __len__(self) -> int:
        return len(self.names)

    def add_missing(self, values: Sequence[str]) -> list[str]:
        """Give codes to the values not seen before; returns them."""
        code = self.code
        new = [v for v in dict.fromkeys(values) if v not in code]
        for v in new:
            code[v] = len(self.names)
            self.names.append(v)
        return new

    def rank(self) -> I64:
        """A label for each code that orders codes as their strings sort (``a < b`` exactly
        when the string of ``a`` sorts first): the compiled step breaks ties by it, so that
        results do not depend on the order strings were first seen in.

        Labels keep gaps between them: a string added later takes a label between its
        neighbours' without moving any other, so a batch pays for its new strings only, not
        for all strings seen (a sorted list finds the neighbours). When a gap runs out, every
        string is labelled afresh, evenly spaced.

        >>> codes = StringCodes()
        >>> _ = codes.add_missing(["m", "c"]), codes.rank()
        >>> _ = codes.add_missing(["a", "x", "d"])
        >>> [codes.names[c] for c in codes.rank().argsort()]
        ['a', 'c', 'd', 'm', 'x']
        """
        have, n = len(self._sorted), len(self.names)
        if have == n:
            return self._labels[:n]
        if self._labels.shape[0] < n:
            self._labels = grow(self._labels, n)
        labels, names, done, code = self._labels, self.names, self._sorted, self.code
        label = labels.item
        fresh = sorted(range(have, n), key=names.__getitem__)
        new = [names[c] for c in fresh]
        # each new string's place among those ranked; the new strings of one gap share it
        at = list(map(done.bisect_left, new))
        room = True
        j = 0
        while j < len(new):
            p, k = at[j], j + 1
            while k < len(new) and at[k] == p:
                k += 1
            m = k - j
            lo = label(code[done[p - 1]]) if p else -LIMIT
            hi = label(code[done[p]]) if p < len(done) else LIMIT
            if p == len(done) and lo + STEP * m < hi:  # past the last: steps up
                first, step = lo + STEP, STEP
            elif p == 0 and hi - STEP * m > lo:  # before the first: steps down to it
                first, step = hi - STEP * m, STEP
            else:  # evenly within the gap
                step = (hi - lo) // (m + 1)
                first = lo + step
            if step < 1:
                room = False  # labelled anew below
                break
            if m == 1:  # (most: new strings seldom share a gap)
                labels[fresh[j]] = first
            else:
                labels[fresh[j:k]] = np.arange(m, dtype=np.int64) * step + first
            j = k
        done.update(new)
        if not room:
            self._relabel()
        return labels[:n]

    def _relabel(self) -> None:
        """Label the strings ranked so far evenly across the range, in their order."""
        self.relabelled += 1
        done, code = self._sorted, self.code
        step = (2 * LIMIT) // (len(done) + 1)
        at = np.fromiter((code[s] for s in done), np.int64, len(done))
        self._labels[at] = -LIMIT + step * np.arange(1, len(done) + 1, dtype=np.int64)


def grow(a: Any, n: int, fill: Any = 0) -> Any:
    """``a`` with at least ``n`` rows (doubling), new rows filled with ``fill``."""
    if a.shape[0] >= n:
        return a
    rows = max(n, 2 * a.shape[0], 64)
    b = np.full((rows, *a.shape[1:]), fill, dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


def _grown_rows(a: Any, n: int) -> Any:
    """``a`` (tasks x codes, C order) with room for ``n`` codes: itself while it has it (the
    new codes' entries are written in place), else a copy twice as wide.

    >>> a = np.zeros((2, 64), np.int64)
    >>> _grown_rows(a, 64) is a, _grown_rows(a, 65).shape
    (True, (2, 128))
    """
    if a.shape[1] >= n:
        return a
    return grow(a.T, n).T.copy()


class CodeTables:
    """The codes of a pipeline's strings and the tables by code (see the module's docstring)."""

    def __init__(self, config: PipelineConfig, features: FeatureBuilder) -> None:
        self.config = config
        self.features = features
        self.task_names = [t.name for t in config.tasks]
        labels = [t.label for t in config.tasks]
        nt = len(labels)
        self.users, self.items = StringCodes(), StringCodes()
        self.topics, self.types = StringCodes(), StringCodes()
        self.user_fidx = np.zeros(0, np.int64)
        self.user_part = np.zeros(0, np.int64)
        self.item_fidx = np.zeros(0, np.int64)
        self.item_crc = np.zeros(0, np.int64)  # how velocity counts name the item
        self.topic_fidx = np.zeros(0, np.int64)
        self.topic_part = np.zeros(0, np.int64)
        self.topic_track = np.zeros(0, np.bool_)
        self.ko_topic = np.zeros((nt, 0), np.int64)
        self.ko_item = np.zeros((nt, 0), np.int64)
        self.ko_user = np.zeros((nt, 0), np.int64)
        self.type_tables: tuple[Any, ...] = ()
        self._track = frozenset(config.profile.track)
        #: how profiles keep behaviour: which types count, in which column, in how many keys
        self.behaviour = BehaviourTracker(config.profile, config.profile.counters_half_life_s)
        self.delayed = np.array([x.kind == "delayed" for x in labels], np.bool_)
        self.by_item = np.array([x.key == "item" for x in labels], np.bool_)
        self.by_user = np.array([x.key == "user" for x in labels], np.bool_)
        self.threshold = np.array([x.threshold for x in labels], np.float64)
        self.has_pos = np.array([bool(x.positive) for x in labels], np.bool_)
        self.window = np.array([x.window_s if x.kind == "delayed" else 0.0 for x in labels])
        self.per_key = np.array([x.open_per_key for x in labels], np.int64)
        #: ``target = "value"``: learns the sum of the conversions' value (a regression task)
        self.regression = np.array([t.regression for t in config.tasks], np.bool_)
        #: ``label.feedback`` by ``learn.delayed.MODES``, and the flags of its learn operations
        self.feedback = np.array([MODES[x.feedback] for x in labels], np.int64)
        self.learn_flags = np.array([op_flags(x.feedback) for x in labels], np.int8)
        #: ``feedback = "wait"``: how long after its exposure an example is learned (else 0)
        self.wait = np.array([x.wait_s if x.feedback == WAIT else 0.0 for x in labels])
        #: topic and task names as the compiled item writer reads them
        self.topic_strings, self.task_strings = StringTable(), StringTable()
        self.task_strings.extend(self.task_names)

    def keys(self, t: int) -> StringCodes:
        """The codes of task ``t``'s keys: users, items or topics."""
        if self.by_user[t]:
            return self.users
        return self.items if self.by_item[t] else self.topics

    def intern(
        self,
        users: Sequence[str],
        items: Sequence[str],
        topics: Sequence[str],
        kinds: Sequence[str],
    ) -> None:
        """Give codes (and table rows) to the strings not seen before."""
        b = self.features
        new = self._new(self.users, users, ("user_fidx", "user_part"))
        if new and self.by_user.any():
            self.ko_user = _grown_rows(self.ko_user, len(self.users))
        for v in new:
            c = self.users.code[v]
            self.user_fidx[c] = b.value_index("user", v)
            self.user_part[c] = b.part(v)
            for t, name in enumerate(self.task_names):
                if self.by_user[t]:
                    self.ko_user[t, c] = key_outcome_name(name, v)
        new = self._new(self.items, items, ("item_fidx", "item_crc"))
        if new and self.by_item.any():
            self.ko_item = _grown_rows(self.ko_item, len(self.items))
        for v in new:
            c = self.items.code[v]
            self.item_fidx[c] = b.value_index("item", v)
            self.item_crc[c] = velocity_item(v)
            for t, name in enumerate(self.task_names):
                if self.by_item[t]:
                    self.ko_item[t, c] = key_outcome_name(name, v)
        new = self._new(self.topics, topics, ("topic_fidx", "topic_part", "topic_track"))
        if new:
            self.ko_topic = _grown_rows(self.ko_topic, len(self.topics))
            self.topic_strings.extend(new)
        for v in new:
            c = self.topics.code[v]
            self.topic_fidx[c] = b.value_index("topic", v)
            self.topic_part[c] = b.part(v)
            self.topic_track[c] = v in self._track
            for t, name in enumerate(self.task_names):
                if not self.by_item[t] and not self.by_user[t]:
                    self.ko_topic[t, c] = key_outcome_name(name, v)
        if self.types.add_missing(kinds) or not self.type_tables:
            self._type_tables()

    def _new(self, codes: StringCodes, values: Sequence[str], tables: tuple[str, ...]) -> list[str]:
        new = codes.add_missing(values)
        if new:
            for name in tables:
                setattr(self, name, grow(getattr(self, name), len(codes)))
        return new

    def _type_tables(self) -> None:
        b, config = self.features, self.config
        names = self.types.names
        nt, n = len(self.task_names), max(len(names), 1)
        weights = dict(config.profile.weights)
        monetary = frozenset(config.profile.monetary_types)
        on = np.zeros((nt, n), np.bool_)
        conv = np.zeros((nt, n), np.bool_)
        pos = np.zeros((nt, n), np.bool_)
        for t, task in enumerate(config.tasks):
            for c, kind in enumerate(names):
                on[t, c] = kind in task.on
                conv[t, c] = kind in task.label.conversion
                pos[t, c] = kind in task.label.positive
        column = self.behaviour.column
        self.type_tables = (
            np.array([b.value_index("type", k) for k in names] or [0], np.int64),
            np.array([b.value_index("decayed", k) for k in names] or [0], np.int64),
            np.array([k in monetary for k in names] or [False], np.bool_),
            np.array(
                [weights.get(k, config.profile.default_weight) for k in names] or [0.0], np.float64
            ),
            on,
            conv,
            pos,
            np.array([column.get(k, -1) for k in names] or [-1], np.int64),
        )

    @property
    def monetary(self) -> Any:
        """Whether each event type (by code) is monetary."""
        return self.type_tables[2]

    def by_code(self, user_row: I64, item_row: I64, aliases: dict[str, str]) -> ByCode:
        """The tables as the kernel reads them, with this batch's rows of users and items;
        ``aliases``: the identity links read (anonymous id -> user id)."""
        owner_row = user_row
        if aliases:
            code = self.users.code
            links = [(code[a], code.get(u, -1)) for a, u in aliases.items() if a in code]
            if links:
                owner_row = user_row.copy()
                for anon, owner in links:
                    owner_row[anon] = -1 if owner < 0 else user_row[owner]
        type_fidx, type_dec, type_mon, type_w = self.type_tables[:4]
        return ByCode(
            user_fidx=self.user_fidx,
            user_part=self.user_part,
            user_rank=self.users.rank(),
            user_row=user_row,
            owner_row=owner_row,
            item_fidx=self.item_fidx,
            item_rank=self.items.rank(),
            item_row=item_row,
            topic_fidx=self.topic_fidx,
            topic_part=self.topic_part,
            topic_track=self.topic_track,
            topic_rank=self.topics.rank(),
            type_fidx=type_fidx,
            type_dec=type_dec,
            type_monetary=type_mon,
            type_weight=type_w,
            type_rank=self.types.rank(),
            type_beh=self.type_tables[7],
        )

    def tasks(self) -> Tasks:
        """The tasks as the kernel reads them."""
        on, conv, pos = self.type_tables[4:7]
        return Tasks(
            delayed=self.delayed,
            on=on,
            conv=conv,
            pos=pos,
            has_pos=self.has_pos,
            threshold=self.threshold,
            by_item=self.by_item,
            window=self.window,
            per_key=self.per_key,
            ko_topic=self.ko_topic,
            ko_item=self.ko_item,
            feedback=self.feedback,
            learn_flags=self.learn_flags,
            wait=self.wait,
            by_user=self.by_user,
            ko_user=self.ko_user,
            regression=self.regression,
        )

"""What :func:`.kernel.run` is called with, as named groups (:mod:`.records`): the kernel's
constants (:func:`step_params`), the batch as codes (:func:`batch_events`), the room for item
statistics (:func:`empty_items`) and for what a batch emits (:func:`buffers`). The batch driver
is :class:`.compiled.CompiledStep`.

>>> items = empty_items(3, tasks=2)
>>> items.count.shape, bool(items.touched.any())
((3, 2, 2), False)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import compress, repeat
from operator import is_not
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from liveprofile.engine import layout as L
from liveprofile.engine.codes import CodeTables
from liveprofile.engine.convroom import conversion_room
from liveprofile.engine.pool import PendingPool
from liveprofile.engine.records import Events, Items, Ops, Outputs, Params
from liveprofile.engine.resident import ResidentUsers
from liveprofile.engine.step import Step
from liveprofile.events.columns import EventColumns
from liveprofile.profile.state import Profile

I64 = npt.NDArray[np.int64]
_Codes = dict[str | None, int]


def step_params(base: Step) -> Params:
    """The constants of the kernel: feature tables, half-lives, priors, rooms and switches."""
    config = base.config
    fc, tabs, last = L.feature_tables(base.features)
    updater, builder = base.updater, base.features
    fp = np.zeros(7)
    fp[L.FP_H_COUNTERS] = updater.h_counters
    fp[L.FP_H_INTERESTS] = updater.h_interests
    fp[L.FP_H_MIN] = min(updater.h_counters, updater.h_interests)
    fp[L.FP_PRIOR] = builder.RATE_PRIOR
    fp[L.FP_STRENGTH] = builder.RATE_STRENGTH
    fp[L.FP_TWO] = 2.0
    ip = np.zeros(L.IP_SIZE, np.int64)
    ip[L.IP_BEH_ROOM] = updater.behaviour.room
    ip[L.IP_BEH_VALUE] = updater.behaviour.value
    ip[L.IP_CROSSES] = int(config.features.crosses)
    ip[L.IP_TIME] = int(config.features.time_of_day)
    ip[L.IP_TOP_K] = config.profile.top_k
    ip[L.IP_KEY_ROOM] = config.profile.outcome_keys
    ip[L.IP_RECENT] = config.risk.recent
    ip[L.IP_TRACK] = int(bool(config.profile.track))
    ip[L.IP_MASK] = builder.mask
    return Params(fc=fc, tabs=tabs, last=last, fp=fp, ip=ip)


def empty_items(n: int, tasks: int) -> Items:
    """Room for the statistics of ``n`` items (rows by item code)."""
    return Items(
        xf=np.zeros((n, len(L.ITEM_FLOATS))),
        xi=np.zeros((n, len(L.ITEM_INTS)), np.int64),
        count=np.zeros((n, 2, tasks), np.int64),
        first=np.zeros((n, 2, tasks), np.int64),
        touched=np.zeros(n, np.bool_),
    )


def batch_events(
    tables: CodeTables,
    resident_users: ResidentUsers,
    profiles: dict[str, Profile],
    cols: EventColumns,
    ok: Any,
    batch_users: list[str],
    batch_items: list[str],
) -> tuple[Events, I64]:
    """The batch as codes (interning its strings and those its users' profiles hold), and
    each user code's row in this batch (-1: none). The item arrays are the caller's to grow to
    the items interned."""
    n = len(cols)
    flat_topics, topic_starts = cols.topics()
    # strings the stored profiles hold: items and kinds of recent events, kinds, interests
    recent_items: list[str] = []
    stored_kinds: list[str] = []
    interest_keys: list[str] = []
    resident = resident_users.slot  # their strings have codes already
    for u in batch_users:
        p = None if u in resident else profiles.get(u)
        if p is None:
            continue
        for _, kind, item, _ in p.recent:
            stored_kinds.append(kind)
            if item is not None:
                recent_items.append(item)
        stored_kinds.extend(p.decayed)
        interest_keys.extend(p.interests)
        recent_items.extend(p.behaviour_items)
        interest_keys.extend(p.behaviour_categories)
    # the batch's kinds and topics are mostly known: looked up once, only the rest interned
    kinds, topics = tables.types.code, tables.topics.code
    kind_code, tp_code = _known(kinds, cols.type), _known(topics, flat_topics)
    new_kinds, new_topics = _unknown(cols.type, kind_code), _unknown(flat_topics, tp_code)
    tables.intern(
        batch_users,
        [*batch_items, *recent_items],
        [*new_topics, *interest_keys],  # the topics hold every category
        [*new_kinds, *stored_kinds],
    )
    if new_kinds:
        kind_code = _known(kinds, cols.type)
    if new_topics:
        tp_code = _known(topics, flat_topics)
    ucode, icode = tables.users.code, tables.items.code
    # None (no item, no category) is no key: its code is -1
    item_or_none = cast(_Codes, icode).get
    ev_ucode = np.fromiter(map(ucode.__getitem__, cols.user), np.int64, n)
    ev_icode = np.fromiter(map(item_or_none, cols.item_id, repeat(-1)), np.int64, n)
    u_codes = np.fromiter(map(ucode.__getitem__, batch_users), np.int64, len(batch_users))
    user_row = np.full(len(tables.users), -1, np.int64)
    user_row[u_codes] = np.arange(len(u_codes))
    tp_start = np.array(topic_starts, np.int64)
    # an event's category is its first topic
    has_category = np.fromiter(map(is_not, cols.category, repeat(None)), np.bool_, n)
    cat = np.full(n, -1, np.int64)
    cat[has_category] = tp_code[tp_start[:-1][has_category]]
    ev = Events(
        ok=ok,
        urow=user_row[ev_ucode],
        ucode=ev_ucode,
        irow=ev_icode,  # items keep their codes as rows
        icode=ev_icode,
        type=kind_code,
        ts=cols.ts,
        value=cols.value,
        cat=cat,
        tp_start=tp_start,
        tp_code=tp_code,
    )
    return ev, user_row


def _known(codes: dict[str, int], values: Sequence[str]) -> I64:
    """The code of each of ``values`` (-1: none yet)."""
    return np.fromiter(map(codes.get, values, repeat(-1)), np.int64, len(values))


def _unknown(values: Sequence[str], codes: I64) -> list[str]:
    """The ``values`` whose ``codes`` are -1, in order."""
    if not codes.size or codes.min() >= 0:
        return []
    return list(compress(values, (codes < 0).tolist()))


def buffers(
    pool: PendingPool,
    tables: CodeTables,
    n_tasks: int,
    behaviour_width: int,
    ev: Events,
    linked: Iterable[str] = (),
) -> tuple[Ops, Outputs]:
    """Room for what this batch may open, and for its model operations and records
    (``linked``: users whose events an identity link may move, see :mod:`.convroom`)."""
    nt, n = n_tasks, len(ev.ok)
    max_topics = int(np.diff(ev.tp_start).max()) if n else 0
    width = 48 + 2 * max_topics + len(tables.types) + 2 * behaviour_width
    pool.reserve(n * int(tables.delayed.sum()), width)
    width = pool.arrays.fidx.shape[1]
    live = int(pool.arrays.hlen[:nt].sum())
    # an exposure, the end of its wait, a late positive (feedback = "wait"); else two
    max_ops = (3 if tables.wait.any() else 2) * n + 2 * live + 1
    ops = Ops(
        kind=np.zeros((nt, max_ops), np.int8),
        start=np.zeros((nt, max_ops + 1), np.int64),
        idx=np.empty((nt, max_ops * width), np.int64),
        val=np.empty((nt, max_ops * width), np.float64),
        y=np.zeros((nt, max_ops), np.float64),
        n=np.zeros(nt, np.int64),
        cur_idx=np.empty(width, np.int64),
        cur_val=np.empty(width, np.float64),
    )
    max_rec = nt * (2 * n) + live + 1
    # a conversion converts every waiting example of its key (a regression task's again)
    room = conversion_room(pool, tables, ev, linked)
    outputs = Outputs(
        recs=np.zeros((max_rec, 4), np.int64),
        rec_ts=np.zeros(max_rec, np.float64),
        rec_label=np.zeros(max_rec, np.bool_),
        created=np.zeros((nt, n + 1), np.int64),
        n_created=np.zeros(nt, np.int64),
        converted=np.zeros((nt, room), np.int64),
        n_converted=np.zeros(nt, np.int64),
        conv_value=np.zeros((nt, room) if tables.regression.any() else (nt, 0), np.float64),
        freed=np.zeros(nt * n + live + 1, np.int64),
        res=np.zeros(4, np.int64),
    )
    return ops, outputs

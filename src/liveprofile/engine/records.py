"""The named groups of arrays the compiled step works on.

:func:`liveprofile.engine.kernel.run` takes a batch as nine records instead of a hundred loose
arrays: numba compiles a function for the record types it is given, so a field is read by name
and two arrays of one dtype cannot be swapped by position. Column and table layouts inside the
arrays are in :mod:`liveprofile.engine.layout`. Counts per task (examples and positives) sit in
one array ``(rows, 2, tasks)`` in the order of ``layout.COUNTS``, beside ``first``: when each
count first became non-zero, which orders the keys of the stored dicts.

>>> users = Users.empty(2, types=3, tasks=1, top_k=4, room=3, recent=5)
>>> users.pf.shape, users.count.shape, users.rts.shape
((2, 6), (2, 2, 1), (2, 6))
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from liveprofile.engine.layout import P_LASTPUR, PROFILE_FLOATS, PROFILE_INTS, SPEND_ROOM
from liveprofile.profile.behaviour import trim_limit


def empty_rows(n: int, keys: int, width: int) -> tuple[Any, Any, Any]:
    """``bkey``, ``blen`` and ``bval`` of ``n`` rows with no behaviour (item and category)."""
    return (
        np.zeros((n, 2, keys), np.int64),
        np.zeros((n, 2), np.int64),
        np.zeros((n, 2, keys, width)),
    )


class Events(NamedTuple):
    """The batch, one entry per event (codes of -1: none)."""

    ok: Any  # applied (not a duplicate)
    urow: Any  # the user's row in :class:`Users`
    ucode: Any
    irow: Any  # the item's row in :class:`Items` (its code, or -1)
    icode: Any
    type: Any
    ts: Any
    value: Any  # NaN: none
    cat: Any  # topic code of the category
    tp_start: Any  # the event's topics are tp_code[tp_start[e]:tp_start[e + 1]]
    tp_code: Any


class ByCode(NamedTuple):
    """Tables by code of users, items, topics and event types (strings get codes once)."""

    user_fidx: Any  # feature index of user=...
    user_part: Any  # hash of the user in crosses
    user_rank: Any  # position in the sorted order of the strings
    user_row: Any  # row in :class:`Users` this batch (-1: none)
    owner_row: Any  # row of the profile the user's delayed outcomes count on (its alias owner)
    item_fidx: Any
    item_rank: Any
    item_row: Any  # row in :class:`Items` (-1: not held)
    topic_fidx: Any
    topic_part: Any
    topic_track: Any  # whether interests track the topic
    topic_rank: Any
    type_fidx: Any
    type_dec: Any  # feature index of the decayed count
    type_monetary: Any
    type_weight: Any  # interest weight
    type_rank: Any
    type_beh: Any  # the column counting the type in a behaviour list (-1: not counted)


class Tasks(NamedTuple):
    """The learning tasks, one row each (by event type where two-dimensional)."""

    delayed: Any
    on: Any  # (task, type): the type gives an example
    conv: Any  # (task, type): the type converts
    pos: Any  # (task, type): the type is a positive label
    has_pos: Any
    threshold: Any
    by_item: Any  # keyed by item (else by category)
    window: Any
    per_key: Any  # most examples awaiting a conversion per (user, key)
    ko_topic: Any  # (task, topic code): the key-outcome name
    ko_item: Any  # (task, item code)
    feedback: Any  # label.feedback by learn.delayed.MODES (> 0: learned when exposed)
    learn_flags: Any  # flags of the learn operations (learn.base.FAKE_NEGATIVE)
    wait: Any  # feedback = "wait": learned this long after exposure (else 0.0)
    by_user: Any  # keyed by user (any conversion of the same user)
    ko_user: Any  # (task, user code): the key-outcome name
    regression: Any  # target = "value": learns the sum of its conversions' value


class Params(NamedTuple):
    """Feature indices and parameters (see ``layout.feature_tables``, ``FP_*`` and ``IP_*``)."""

    fc: Any  # scalar feature indices, by F_*
    tabs: Any  # bucket tables, a row by T_*
    last: Any  # the last bucket of each table
    fp: Any  # float parameters, FP_WATERMARK updated
    ip: Any  # int parameters, IP_TICK updated


class Users(NamedTuple):
    """The profiles of a batch, one row per user."""

    pf: Any  # floats: layout.PROFILE_FLOATS
    pi: Any  # ints: layout.PROFILE_INTS
    cnt: Any  # counts per event type
    dec: Any  # decayed counts per event type
    tord: Any  # event types in the order the profile first saw them
    tlen: Any
    ik: Any  # interest keys (topic codes) and values, in insertion order
    iv: Any
    il: Any
    okey: Any  # key outcomes: names and packed counts, in insertion order
    oval: Any
    olen: Any
    sday: Any  # spend: days and cents, in insertion order
    scents: Any
    slen: Any
    rts: Any  # recent events: time, type code, item code (-1: none), value (NaN: none)
    rty: Any
    rit: Any
    rva: Any
    rlen: Any
    count: Any  # examples and positives per task
    first: Any
    touched: Any
    bkey: Any  # behaviour per item (0) and category (1): keys, lengths, lists (engine.behaviour)
    blen: Any
    bval: Any

    @classmethod
    def empty(
        cls,
        n: int,
        types: int,
        tasks: int,
        top_k: int,
        room: int,
        recent: int,
        behaviour: tuple[int, int] = (2, 2),
    ) -> Users:
        """``behaviour``: keys and floats per key of a behaviour map (``engine.behaviour.rows``)."""
        interests, keys = max(top_k, 1) + 8, trim_limit(room) + 2
        pf = np.zeros((n, len(PROFILE_FLOATS)))
        pf[:, P_LASTPUR] = np.nan
        return cls(
            pf,
            np.zeros((n, len(PROFILE_INTS)), np.int64),
            np.zeros((n, types), np.int64),
            np.zeros((n, types)),
            np.zeros((n, types), np.int64),
            np.zeros(n, np.int64),
            np.zeros((n, interests), np.int64),
            np.zeros((n, interests)),
            np.zeros(n, np.int64),
            np.zeros((n, keys), np.int64),
            np.zeros((n, keys), np.int64),
            np.zeros(n, np.int64),
            np.zeros((n, SPEND_ROOM), np.int64),
            np.zeros((n, SPEND_ROOM), np.int64),
            np.zeros(n, np.int64),
            np.zeros((n, recent + 1)),
            np.zeros((n, recent + 1), np.int64),
            np.zeros((n, recent + 1), np.int64),
            np.zeros((n, recent + 1)),
            np.zeros(n, np.int64),
            np.zeros((n, 2, tasks), np.int64),
            np.full((n, 2, tasks), -1, np.int64),
            np.zeros(n, np.bool_),
            *empty_rows(n, *behaviour),
        )


class Items(NamedTuple):
    """Item statistics by item code, kept across batches (layout.ITEM_FLOATS, ITEM_INTS)."""

    xf: Any
    xi: Any
    count: Any  # examples and positives per task
    first: Any
    touched: Any


class Pool(NamedTuple):
    """The open pending examples: a pool of slots, a deadline heap per task, and those of each
    (user, task, key), keyed as ``layout.KEYSPACE`` says: a chain of slots, latest exposure
    first (the first slot in ``waiting``, the next ones through ``link``)."""

    task: Any
    user: Any  # user code
    key: Any  # item or topic code
    item: Any  # item code (-1: none)
    open_ts: Any
    deadline: Any
    conv: Any
    flen: Any
    fidx: Any  # (slot, feature)
    fval: Any
    free: Any  # free slots, free[:nfree[0]]
    nfree: Any
    heap: Any  # (task, position): slots; row n_tasks + t: task t's examples whose wait has
    # not ended (feedback = "wait"), in the same order (both come down to exposure time)
    hlen: Any
    waiting: Any  # typed dict: key -> slot of the latest exposure
    link: Any  # slot -> the slot of the next earlier exposure of the same key (-1: none)
    total: Any  # the value of its conversions so far (``target = "value"``; else 0.0)


class Ops(NamedTuple):
    """The model operations of the batch, per task: ops[t, :n[t]], and the example being
    built (``cur_idx``, ``cur_val``)."""

    kind: Any
    start: Any  # (task, op + 1): where each operation's features start in idx/val
    idx: Any
    val: Any
    y: Any
    n: Any
    cur_idx: Any
    cur_val: Any


class Outputs(NamedTuple):
    """What the batch did besides the state: records linking model outputs back to profiles,
    pending examples made, converted and freed, and counts (applied, examples, records, freed)."""

    recs: Any  # (record, 4): kind, task, operation, user row or slot
    rec_ts: Any
    rec_label: Any
    created: Any  # (task, n): slots
    n_created: Any
    converted: Any  # (task, n): slots, once per conversion
    n_converted: Any
    conv_value: Any  # (task, n): the value each conversion added (regression tasks)
    freed: Any
    res: Any

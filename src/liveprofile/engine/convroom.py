"""Room for the conversions a batch may record in the compiled step (``Outputs.converted``).

An example of a task that learns whether a conversion came is converted at most once, so a batch
converts at most the examples open before it and those it opens. A regression task's examples
(``target = "value"``) await conversions until their window closes: every conversion of their
user and key converts them again (``TaskState.convert_at``), up to ``open_per_key`` examples at
once (``TaskState.may_open`` counts them all). :func:`conversion_room` bounds the conversions of
a batch: by that limit per conversion event, or, where that is too much room, by the examples
each (user, key) can have open at once in the batch.

>>> conversions_of(np.array([7, 7, 7, 9]), np.array([7, 9, 4, 7]), per_key=2)
5
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import is_not

import numpy as np
import numpy.typing as npt

from liveprofile.engine.codes import CodeTables
from liveprofile.engine.layout import KEYSPACE
from liveprofile.engine.pool import PendingPool
from liveprofile.engine.records import Events
from liveprofile.events.columns import EventColumns
from liveprofile.events.schema import COMMANDS, Event

I64 = npt.NDArray[np.int64]

#: conversions (per task) beyond which the room is counted per (user, key) rather than per event
SIMPLE_ROOM = 1 << 18


def conversion_room(
    pool: PendingPool, tables: CodeTables, ev: Events, linked: Iterable[str] = ()
) -> int:
    """Room per task for the conversions of the batch ``ev``. ``linked``: users whose events an
    identity link in the batch may move to another user (counted as one user)."""
    live = int(pool.arrays.hlen[: len(tables.delayed)].sum())
    room = len(ev.ok) + live + 1  # each example converted at most once
    if not tables.regression.any():
        return room
    on_of, conv_of = tables.type_tables[4:6]
    ok = ev.ok
    for t in np.flatnonzero(tables.regression).tolist():
        key = ev.ucode if tables.by_user[t] else ev.icode if tables.by_item[t] else ev.cat
        converts = ok & conv_of[t][ev.type] & (key >= 0)
        n_conv = int(converts.sum())
        if not n_conv:
            continue
        opens = ok & on_of[t][ev.type] & (key >= 0)
        open_t = int(pool.arrays.hlen[t])
        per_key = int(tables.per_key[t])
        simple = n_conv * min(per_key, open_t + int(opens.sum()))
        if simple > SIMPLE_ROOM:
            simple = min(simple, _per_pair(pool, tables, ev, t, key, converts, opens, linked))
        room = max(room, simple + 1)
    return room


def _per_pair(
    pool: PendingPool,
    tables: CodeTables,
    ev: Events,
    t: int,
    key: I64,
    converts: npt.NDArray[np.bool_],
    opens: npt.NDArray[np.bool_],
    linked: Iterable[str],
) -> int:
    """The conversions of task ``t`` in the batch, bounded per (user, key): each conversion
    converts at most the examples of its user and key open before the batch and those the
    batch opens (and ``open_per_key``)."""
    a = pool.arrays
    slots = pool.live(t)
    code = tables.users.code
    moved = np.array(sorted({code[u] for u in linked if u in code}), np.int64)

    def pairs(users: I64, keys: I64) -> I64:
        users = np.where(np.isin(users, moved), -1, users)  # any of the linked users
        if tables.by_user[t]:
            keys = np.where(np.isin(keys, moved), -1, keys)
        return users * KEYSPACE + keys

    before = pairs(a.user[slots], a.key[slots])
    made = pairs(ev.ucode[opens], key[opens])
    conv = pairs(ev.ucode[converts], key[converts])
    return conversions_of(np.concatenate([before, made]), conv, int(tables.per_key[t]))


def conversions_of(examples: I64, conversions: I64, per_key: int) -> int:
    """The most conversions: per conversion, the examples of its pair, at most ``per_key``
    (``examples`` and ``conversions`` give one pair each)."""
    uniq, counts = np.unique(examples, return_counts=True)
    if not len(uniq):
        return 0
    at = np.minimum(np.searchsorted(uniq, conversions), len(uniq) - 1)
    chain = np.where(uniq[at] == conversions, counts[at], 0)
    return int(np.minimum(chain, per_key).sum())


def linked_users(events: Sequence[Event], aliases: Mapping[str, str]) -> set[str]:
    """The users whose events an identity link, a merge or an erasure in ``events`` may move
    to another user: those of the events with an anonymous id or a command, their anonymous
    ids, and the users these are linked to."""
    out: set[str] = set()
    if isinstance(events, EventColumns):  # no commands; the ids as columns
        if events.anon is not None:
            named = list(map(is_not, events.anon, repeat(None)))
            out.update(compress(events.anon, named))  # type: ignore[arg-type]
            out.update(compress(events.user, named))
        return out | {aliases[u] for u in out if u in aliases}
    for e in events:
        if e.anonymous_id is not None:
            out.add(e.anonymous_id)
            out.add(e.user)
        elif e.type in COMMANDS:
            out.add(e.user)
    return out | {aliases[u] for u in out if u in aliases}

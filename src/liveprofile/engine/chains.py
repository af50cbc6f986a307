"""The open pending examples of one (user, task, key) in the compiled step: a chain of pool
slots, latest exposure first (``Pool.waiting`` holds the first slot, ``Pool.link`` the next).

Every exposure opens its own example (``TaskState.may_open``), a conversion marks every example of
the chain whose window holds it (``TaskState.convert_at``; a regression task's examples add up the
conversions' value, converted or not), and a closed example leaves its chain.
The helpers work on arrays only (:data:`~liveprofile.engine.jit.leaf`); :func:`kernel.run`
keeps the typed dict of chains. A task's key is an item, a topic (category) or the user itself
(:func:`task_key`, ``TaskState.key_of``).
"""

from __future__ import annotations

import math

from liveprofile.engine.jit import leaf


@leaf
def task_key(tasks, ev, e, t):  # type: ignore[no-untyped-def]
    """The key code of event ``e`` for task ``t`` (-1: the event has none)."""
    if tasks.by_user[t]:
        return ev.ucode[e]
    return ev.icode[e] if tasks.by_item[t] else ev.cat[e]


@leaf
def key_name(tasks, t, key):  # type: ignore[no-untyped-def]
    """The key-outcome name of key code ``key`` of task ``t``."""
    if tasks.by_user[t]:
        return tasks.ko_user[t, key]
    return tasks.ko_item[t, key] if tasks.by_item[t] else tasks.ko_topic[t, key]


@leaf
def unlink(link, head, slot):  # type: ignore[no-untyped-def]
    """Drop ``slot`` from the chain starting at ``head``; returns the new head (-1: empty)."""
    if head == slot:
        return link[slot]
    prev = head
    cur = link[head]
    while cur >= 0:
        if cur == slot:
            link[prev] = link[cur]
            break
        prev = cur
        cur = link[cur]
    return head


@leaf
def insert(pool, head, slot):  # type: ignore[no-untyped-def]
    """Put ``slot`` in the chain at ``head`` by exposure time; returns the new head."""
    link = pool.link
    open_ts = pool.open_ts
    ts = open_ts[slot]
    if head < 0 or open_ts[head] < ts:
        link[slot] = head
        return slot
    prev = head  # a late exposure: after the later ones
    while link[prev] >= 0 and open_ts[link[prev]] > ts:
        prev = link[prev]
    link[slot] = link[prev]
    link[prev] = slot
    return head


@leaf
def may_open(pool, head, ts, per_key, every):  # type: ignore[no-untyped-def]
    """``TaskState.may_open``: no open example of the chain at ``head`` exposed at ``ts``, and
    fewer than ``per_key`` of them awaiting a conversion (``every``: a regression task's, whose
    converted examples await further conversions, count all)."""
    link = pool.link
    open_ts = pool.open_ts
    conv = pool.conv
    waiting = 0
    slot = head
    while slot >= 0:
        if open_ts[slot] == ts:
            return False
        if every or not conv[slot]:
            waiting += 1
            if waiting >= per_key:
                return False
        slot = link[slot]
    return True


@leaf
def convert(pool, out, t, head, ts, value, every):  # type: ignore[no-untyped-def]
    """Mark the examples of the chain at ``head`` awaiting a conversion whose window holds
    ``ts`` converted, latest exposure first (``TaskState.convert_at``). With ``every`` (a
    regression task) converted examples await further conversions, and each adds ``value``
    (0.0 if NaN: none) to its total, noted in ``out.conv_value``."""
    pool_link = pool.link
    pool_open_ts = pool.open_ts
    pool_deadline = pool.deadline
    pool_conv = pool.conv
    pool_total = pool.total
    out_converted = out.converted
    out_n_converted = out.n_converted
    out_conv_value = out.conv_value
    amount = 0.0 if math.isnan(value) else value
    slot = head
    while slot >= 0:
        if (every or not pool_conv[slot]) and pool_open_ts[slot] < ts <= pool_deadline[slot]:
            pool_conv[slot] = True
            j = out_n_converted[t]
            out_converted[t, j] = slot
            if every:
                pool_total[slot] += amount
                out_conv_value[t, j] = amount
            out_n_converted[t] = j + 1
        slot = pool_link[slot]

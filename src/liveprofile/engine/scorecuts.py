"""Which user row each of a batch's scores goes to once logins, erasures and expiries cut rows.

The kernel records every prediction with the row of the user it scored. A profile that a
batch's lifecycle replaced (erased, expired, or a visitor folded into a user) must not keep the
scores its records made before: :func:`cut_scores` applies the batch's cuts, in order, as the
object-level step's ``_score`` does. A cut ``(at, row, into)`` with ``into`` -1 drops the
records of ``row`` before record ``at`` (they scored a profile that is gone); with ``into`` a
row, the profile of ``row`` was folded into that of ``into``, and its records before ``at``
pass to ``into`` for each task the latter had no score of before the fold (``had``), unless
one of ``into``'s own records (not one it took over) scored that task earlier.

A batch of returning customers has two cuts per login, thousands per batch: the cuts run in one
compiled pass, each reading the records of its two rows only.

>>> import numpy as np
>>> rows = np.array([0, 1, 0, 1, 0])  # five records, scoring rows 0 and 1
>>> tasks = np.zeros(5, np.int64)
>>> cuts = np.array([[3, 0, 1]])  # before record 3, row 0 was folded into row 1
>>> cut_scores(rows, tasks, np.zeros(5, np.bool_), cuts, np.zeros((1, 1), np.bool_))
>>> rows.tolist()  # record 0 passes to row 1 (row 1's own first score is record 1's)
[1, 1, 0, 1, 0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from liveprofile.engine.jit import jit

#: columns of a cut
C_AT, C_ROW, C_INTO = range(3)


def cut_array(
    cuts: list[tuple[int, int, int, frozenset[str]]], names: list[str]
) -> tuple[Any, Any]:
    """The cuts as :func:`cut_scores` reads them: ``(at, row, into)`` per cut, and per cut and
    task whether ``into`` had a score of the task before the fold."""
    table = np.array([c[:3] for c in cuts], np.int64).reshape(len(cuts), 3)
    had = np.zeros((len(cuts), len(names)), np.bool_)
    for j, (*_, tasks) in enumerate(cuts):
        if tasks:
            had[j] = [name in tasks for name in names]
    return table, had


@jit
def cut_scores(score_rows, rec_task, resolved, cuts, had):  # type: ignore[no-untyped-def]
    """Apply ``cuts`` (:func:`cut_array`) to ``score_rows``, the row each record's score goes
    to (-1: none); the ``resolved`` records score no row and are left alone."""
    n, nt = score_rows.shape[0], had.shape[1]
    # each row's records as they were (in batch order), and those taken over since (appended
    # in the order they were taken): a chain of entries per row
    top = 0
    for r in range(n):
        if not resolved[r]:
            top = max(top, score_rows[r] + 1)
    for c in range(cuts.shape[0]):
        top = max(top, cuts[c, C_ROW] + 1, cuts[c, C_INTO] + 1)
    head = np.full(top, -1, np.int64)
    tail = np.full(top, -1, np.int64)
    cap = n + 1
    entry = np.empty(cap, np.int64)
    after = np.empty(cap, np.int64)
    own_head = np.full(top, -1, np.int64)  # the row's own records: a chain of their own
    own_next = np.full(n, -1, np.int64)
    used = 0
    for r in range(n - 1, -1, -1):
        row = score_rows[r]
        if resolved[r] or row < 0:
            continue
        own_next[r] = own_head[row]
        own_head[row] = r
    for r in range(n):
        row = score_rows[r]
        if resolved[r] or row < 0:
            continue
        if used == cap:
            entry, after, cap = _grow(entry, after, cap)
        entry[used], after[used] = r, -1
        if tail[row] < 0:
            head[row] = used
        else:
            after[tail[row]] = used
        tail[row] = used
        used += 1
    gone = np.zeros(n, np.bool_)  # records of a profile replaced before
    seen = np.full(n, -1, np.int64)  # the cut that last looked at a record
    first = np.empty(nt, np.int64)
    for c in range(cuts.shape[0]):
        at, row, into = cuts[c, C_AT], cuts[c, C_ROW], cuts[c, C_INTO]
        if row < 0:
            continue
        if into >= 0:  # the first record of each task of the profile folded into
            for t in range(nt):
                first[t] = n
            r = own_head[into]
            while r >= 0:
                t = rec_task[r]
                if not gone[r] and first[t] == n:
                    first[t] = r
                r = own_next[r]
        j = head[row]
        while j >= 0:
            r = entry[j]
            j = after[j]
            if r >= at or score_rows[r] != row or seen[r] == c:
                continue
            seen[r] = c
            if into < 0:
                score_rows[r] = -1
                gone[r] = True
                continue
            t = rec_task[r]
            if had[c, t] or r >= first[t]:
                continue
            score_rows[r] = into
            if used == cap:
                entry, after, cap = _grow(entry, after, cap)
            entry[used], after[used] = r, -1
            if tail[into] < 0:
                head[into] = used
            else:
                after[tail[into]] = used
            tail[into] = used
            used += 1


@jit
def _grow(entry, after, cap):  # type: ignore[no-untyped-def]
    """The chains' entries with twice the room."""
    wide, next_ = np.empty(2 * cap, np.int64), np.empty(2 * cap, np.int64)
    wide[:cap], next_[:cap] = entry, after
    return wide, next_, 2 * cap

"""The compiled pass that moves a batch's scores off the rows its lifecycle cut
(``engine/scorecuts.py``), against the plain reading of the rule: each cut takes, in order, the
records its row holds as the cuts before it left them."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.engine.scorecuts import cut_array, cut_scores

NAMES = ["buy", "click", "spend"]


def plain_cuts(score_rows, rec_task, resolved, cuts, names):  # type: ignore[no-untyped-def]
    """The rule, one cut at a time over arrays of each row's records."""
    scoring = np.flatnonzero(~resolved)
    rows = score_rows[scoring]
    order = np.argsort(rows, kind="stable")
    ordered, at_row = scoring[order], rows[order]
    own = {r: ordered[at_row == r] for r in set(rows.tolist()) if r >= 0}
    members = dict(own)
    gone = np.zeros(len(score_rows), np.bool_)
    empty = np.zeros(0, np.int64)
    for at, row, into, had in cuts:
        mine = members.get(row, empty)
        before = mine[mine < at]
        if into < 0:
            score_rows[before] = -1
            gone[before] = True
            members[row] = mine[mine >= at]
            continue
        theirs = own.get(into, empty)
        theirs = theirs[~gone[theirs]]
        moved = np.zeros(len(before), np.bool_)
        for t, name in enumerate(names):
            if name in had:
                continue
            first = theirs[rec_task[theirs] == t]
            limit = first[0] if len(first) else len(score_rows)
            moved |= (rec_task[before] == t) & (before < limit)
        score_rows[before[moved]] = into
        members[row] = np.setdiff1d(mine, before[moved])
        members[into] = np.sort(np.concatenate([members.get(into, empty), before[moved]]))


@st.composite
def batches(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(0, 60))
    rows = draw(st.integers(1, 6))
    score_rows = np.array(draw(st.lists(st.integers(-1, rows - 1), min_size=n, max_size=n)))
    rec_task = np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), np.int64)
    resolved = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), np.bool_)
    # a resolved record's "row" is the pool entry it resolved, not a user row
    score_rows = np.where(resolved, score_rows + 1000, score_rows).astype(np.int64)
    cut = st.tuples(
        st.integers(0, n + 1),
        st.integers(-1, rows - 1),
        st.integers(-1, rows - 1),
        st.frozensets(st.sampled_from(NAMES)),
    )
    cuts = draw(st.lists(cut, max_size=12))
    cuts.sort(key=lambda c: c[0])  # cuts come in the batch's order
    return score_rows, rec_task, resolved, cuts


@settings(max_examples=300, deadline=None)
@given(batches())
def test_the_compiled_cuts_follow_the_rule(batch) -> None:  # type: ignore[no-untyped-def]
    score_rows, rec_task, resolved, cuts = batch
    expected = score_rows.copy()
    plain_cuts(expected, rec_task, resolved, cuts, NAMES)
    got = score_rows.copy()
    cut_scores(got, rec_task, resolved, *cut_array(cuts, NAMES))
    assert got.tolist() == expected.tolist()


def test_a_fold_passes_scores_only_for_tasks_the_user_had_not_scored() -> None:
    # records 0-3 score row 0 (a visitor), 4-5 row 1 (the user); the visitor folds into the
    # user at record 6; the user had a "buy" score before the batch
    rows = np.array([0, 0, 0, 0, 1, 1, 2], np.int64)
    tasks = np.array([0, 1, 1, 2, 1, 0, 0], np.int64)
    cuts = [(6, 0, 1, frozenset({"buy"})), (6, 0, -1, frozenset())]
    cut_scores(rows, tasks, np.zeros(7, np.bool_), *cut_array(cuts, NAMES))
    # buy: the user had it; click: the user's own record 4 scored it later, so the visitor's
    # earlier clicks pass; spend: nothing of the user's, it passes
    assert rows.tolist() == [-1, 1, 1, 1, 1, 1, 2]

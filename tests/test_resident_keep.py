"""The rows :class:`~liveprofile.engine.resident.ResidentUsers` keeps: the last row kept of
each of the ``cap`` users seen most recently, whatever the batches, evictions and forgets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.engine.records import Users
from liveprofile.engine.resident import ResidentUsers
from liveprofile.profile.state import Profile

_batch = st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=8, unique=True)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(0, 6),
    st.lists(st.tuples(_batch, st.lists(st.sampled_from("abcdefghij"), max_size=2)), max_size=12),
)
def test_the_rows_kept_are_the_last_ones_of_the_users_seen_most_recently(
    cap: int, batches: list[tuple[list[str], list[str]]]
) -> None:
    table = ResidentUsers(cap)
    latest: dict[str, int] = {}  # the model: user -> the stamp of its last row, in LRU order
    for stamp, (users, forgotten) in enumerate(batches):
        U = Users.empty(len(users), types=2, tasks=1, top_k=3, room=2, recent=3)
        U.pi[:, 0] = [1000 * stamp + r for r in range(len(users))]  # the event count column
        U.pf[:, 2] = [float(stamp)] * len(users)  # last event time
        table.keep(users, U)
        if cap:
            for user in users[max(0, len(users) - cap) :]:
                latest.pop(user, None)
                latest[user] = 1000 * stamp + users.index(user)
            while len(latest) > cap:
                del latest[next(iter(latest))]
        table.forget(forgotten)
        for user in forgotten:
            latest.pop(user, None)
        assert list(table.slot) == list(latest)
        rows = sorted(table.slot.values())
        assert len(set(rows)) == len(rows)  # one row a user
        assert table.rows is None or max(rows, default=0) < table.rows.pi.shape[0]
        for user, s in table.slot.items():
            assert table.rows is not None and table.rows.pi[s, 0] == latest[user]
        # and the rows read back for a batch are those
        profiles = {u: Profile(u, 0.0, 0.0, float(v // 1000), n=v) for u, v in latest.items()}
        at, got = table.rows_of(list(latest), profiles)
        assert at == list(range(len(latest))) and got == [table.slot[u] for u in latest]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_rows_are_copied_up_to_their_lengths_with_nothing_past_them(data: st.DataObject) -> None:
    # the source rows hold values past their lengths (as the kernel may leave them, e.g. after
    # a trim); the copy into empty rows has what a row laid out from the profile has: zeros
    import numpy as np

    from liveprofile.engine.resident import BY_LENGTH, PER_BATCH, copy_rows

    src = Users.empty(4, types=2, tasks=2, top_k=3, room=2, recent=3, behaviour=(5, 3))
    for a in src:
        a[...] = data.draw(st.integers(1, 9))  # nonzero everywhere, lengths included
    for length in set(BY_LENGTH.values()):
        a = getattr(src, length)
        room = {"blen": 5, "tlen": 2, "il": 11, "olen": 4, "slen": src.sday.shape[1]}
        a[...] = data.draw(st.integers(0, room.get(length, 3)))
    dst = Users.empty(3, types=3, tasks=2, top_k=3, room=2, recent=3, behaviour=(5, 4))
    of = data.draw(st.lists(st.integers(0, 3), min_size=3, max_size=3))
    copy_rows(dst, np.arange(3), src, np.array(of, np.int64))
    for field in Users._fields:
        if field in PER_BATCH:
            continue
        d, s = getattr(dst, field), getattr(src, field)[of]
        length = BY_LENGTH.get(field)
        if length is None:  # whole rows; a wider row (event types added) gets zeros past them
            w = s.shape[1] if s.ndim > 1 else None
            assert (d[:, :w] == s).all() if w else (d == s).all()
            assert not d[:, w:].any() if w else True
            continue
        lengths = getattr(src, length)[of]
        for j in range(3):
            for k in range(lengths.shape[1] if lengths.ndim > 1 else 1):
                m = lengths[j, k] if lengths.ndim > 1 else lengths[j]
                row, was = (d[j, k], s[j, k]) if lengths.ndim > 1 else (d[j], s[j])
                w = was.shape[-1]
                assert (
                    (row[:m, ..., :w] == was[:m]).all()
                    if row.ndim > 1
                    else (row[:m] == was[:m]).all()
                )
                assert not row[m:].any()  # nothing past the length
                if row.ndim > 1:
                    assert not row[:m, w:].any()  # nor past the floats a key had


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_batch, st.integers(1, 12)), min_size=1, max_size=10))
def test_rows_kept_survive_wider_lists_and_only_the_wider_fields_are_laid_out_anew(
    batches: list[tuple[list[str], int]],
) -> None:
    # batches whose key-outcome lists (``room``) vary: a wider one grows those fields alone;
    # every user's kept row still holds its key outcomes and event count as last kept
    import numpy as np

    table = ResidentUsers(cap=6)
    latest: dict[str, tuple[int, list[int]]] = {}
    for stamp, (users, room) in enumerate(batches):
        U = Users.empty(len(users), types=2, tasks=1, top_k=3, room=room, recent=3)
        rng = np.random.default_rng(stamp)
        for r in range(len(users)):
            m = int(rng.integers(0, room + 1))
            U.okey[r, :m] = rng.integers(1, 100, m)
            U.olen[r] = m
            U.pi[r, 0] = 1000 * stamp + r
        before = table.rows
        table.keep(users, U)
        after = table.rows
        assert after is not None
        grew_rows = before is None or after.pf.shape[0] > before.pf.shape[0]
        if not grew_rows:
            assert before is not None
            for field in Users._fields:
                old, new = getattr(before, field), getattr(after, field)
                wider = any(a > b for a, b in zip(_widths(U, field), old.shape[1:], strict=True))
                assert (new is old) == (not wider), field
        for r, user in enumerate(users[max(0, len(users) - 6) :], max(0, len(users) - 6)):
            latest.pop(user, None)
            latest[user] = (int(U.pi[r, 0]), U.okey[r, : U.olen[r]].tolist())
        while len(latest) > 6:
            del latest[next(iter(latest))]
        for user, (n, okey) in latest.items():
            s = table.slot[user]
            assert after.pi[s, 0] == n
            assert after.olen[s] == len(okey) and after.okey[s, : len(okey)].tolist() == okey


def _widths(U: Users, field: str) -> tuple[int, ...]:
    """The widths of ``U``'s field (its shape past the rows)."""
    return tuple(getattr(U, field).shape[1:])

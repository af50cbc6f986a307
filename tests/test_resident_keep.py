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
        profiles = {
            u: Profile(u, 0.0, 0.0, float(v // 1000), n=v) for u, v in latest.items()
        }
        at, got = table.rows_of(list(latest), profiles)
        assert at == list(range(len(latest))) and got == [table.slot[u] for u in latest]

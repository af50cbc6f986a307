"""Logins into users who have a profile, folded on the step's rows (``engine.foldinto``), give
the state of the same logins merged by ``merge_profiles`` on the profile objects, to the byte.

The streams are ``test_fold_new``'s with every user known before the login (or some), so
that the logins fold a visitor into a profile: with late and re-sent events, erasures,
visitors' events after their login, operators' ``$merge`` of users and visitors into users,
TTL expiry, velocity counts and the anomaly detector, in batches cut anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st
from test_compiled_lifecycle import command
from test_fold_new import assert_same, split, stream

from liveprofile.engine import links, loginrun
from liveprofile.events import Event
from liveprofile.events.schema import MERGE


@contextmanager
def counted() -> Iterator[list[int]]:
    """How many logins and merges ``foldinto.fold_profile`` was asked to fold at a stop, or
    the kernel folded (``loginrun``, booked by ``foldinto.book_link``), how many were folded,
    and how many of those were merges."""
    real, book = links.fold_profile, loginrun.book_link
    taken = [0, 0, 0]

    def fold_profile(*args: object) -> bool:
        done = real(*args)  # type: ignore[arg-type]
        taken[0] += 1
        taken[1] += done
        taken[2] += done and bool(args[-1])
        return done

    def book_link(*args: object) -> None:
        taken[0] += 1
        taken[1] += 1
        book(*args)  # type: ignore[arg-type]

    links.fold_profile = fold_profile  # type: ignore[assignment]
    loginrun.book_link = book_link  # type: ignore[assignment]
    try:
        yield taken
    finally:
        links.fold_profile = real  # type: ignore[assignment]
        loginrun.book_link = book  # type: ignore[assignment]


def with_merges(events: list[Event], seed: int, merges: int = 8) -> list[Event]:
    """``events`` with operators' merges: a user or a visitor into a user."""
    rnd = random.Random(seed)
    users = sorted({e.user for e in events if e.anonymous_id is None})
    everyone = sorted({e.user for e in events} | {e.anonymous_id or e.user for e in events})
    out = list(events)
    for k in range(merges):
        at = rnd.randrange(1, len(out))
        into, folded = rnd.choice(users), rnd.choice(everyone)
        out.insert(at, command(out[at - 1], MERGE, into, folded, f"merge-{k}"))
    return out


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    known=st.integers(3, 10),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    velocity=st.booleans(),
    ttl=st.sampled_from(["", "1d"]),
    anomaly=st.booleans(),
    merges=st.integers(0, 8),
)
def test_logins_into_profiles_folded_on_rows_give_merge_profiles_state(
    seed: int, known: int, cuts: list[int], velocity: bool, ttl: str, anomaly: bool, merges: int
) -> None:
    events = with_merges(stream(seed, known=known), seed, merges)
    assert_same(split(events, cuts), ttl=ttl, velocity=velocity, anomaly=anomaly)


def test_merges_are_folded_on_rows() -> None:
    events = with_merges(stream(8, visitors=12, known=12, n=400), 8, merges=20)
    for velocity, anomaly in ((True, False), (False, False), (True, True)):
        for size in (29, 100_000):
            with counted() as taken:
                assert_same(split(events, list(range(size, len(events), size))),
                            velocity=velocity, anomaly=anomaly)  # fmt: skip
            assert taken[2] > 0, "merges into users with a profile are folded on the rows"


def test_logins_into_profiles_are_folded_on_rows() -> None:
    events = stream(5, visitors=12, known=12, n=400)
    for velocity, anomaly in ((True, False), (False, False), (True, True)):
        for size in (13, 100_000):
            with counted() as taken:
                assert_same(split(events, list(range(size, len(events), size))),
                            velocity=velocity, anomaly=anomaly)  # fmt: skip
            asked, folded, _ = taken
            assert folded > 0, "logins into users with a profile are folded on the rows"
            assert folded >= asked // 2, taken


def test_a_visitor_with_more_interests_and_outcomes_than_the_rows_hold() -> None:
    # the user and the visitor each have top_k (4) interests, all different, and spend on
    # days far apart: the merge keeps the top 4 and the spend of the latest 90 days
    t = 1.8e9
    cats = ["tea", "cups", "books", "maps", "pens", "toys", "pots", "jars"]
    user = [
        Event(f"u{k}", "u", "purchase", t + k, item_id=f"i{k}", category=c, value=1.0 + k)
        for k, c in enumerate(cats[:4])
    ]
    later = t + 86_400 * 60
    visit = [
        Event(f"a{k}", "anon", "purchase", later + k, f"j{k}", c, (), 2.0, anonymous_id="anon")
        for k, c in enumerate(cats[4:])
    ]
    login = Event("l", "u", "view", later + 86_400 * 40, item_id="i1", anonymous_id="anon")
    with counted() as taken:
        assert_same([user, visit, [login]])
        assert_same([[*user, *visit, login]])
    asked, folded, _ = taken
    assert folded == asked > 0

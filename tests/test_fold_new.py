"""Logins folded on the step's rows (``engine.foldnew``) give the state of the same logins
taken by the Python lifecycle, and where batches end changes nothing.

A visitor who logs in under a user id without a profile is folded into it on the rows (a login
into a user who has a profile too, ``engine.foldinto``, tested in ``test_fold_into``); every
login takes the Python lifecycle (``Lifecycle._link``) when the folds on the rows are turned
off (:func:`lifecycle_only`). Streams here mix
both with late and re-sent events, erasures of visitors and users before and after their logins,
visitors' events after their login, and profiles idle past the TTL, in batches cut anywhere:
the stored state is that of every login through the lifecycle, to the byte, and the state of the
same events in one batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from test_compiled import assert_batch_free, run
from test_compiled_lifecycle import _snapshot, command, config

from liveprofile.engine import foldnew, links, loginrun
from liveprofile.engine.core import Core
from liveprofile.events import Event
from liveprofile.events.schema import FORGET
from liveprofile.store.layout import POPULATION

CATEGORIES = ["tea", "cups", "books", "maps", "pens", "toys"]


def stream(seed: int, visitors: int = 10, known: int = 3, n: int = 260) -> list[Event]:
    """Visitor ``k`` browses as ``v{k}`` and logs in as ``u{k}`` at a purchase; users
    ``u0``..``u{known - 1}`` have events under their id from the start (a login into a
    profile), the others none (a login into a new user)."""
    rnd = random.Random(seed)
    out: list[Event] = []
    t = 1.7e9
    logged = [False] * visitors
    for k in range(known):
        out.append(Event(f"k{k}", f"u{k}", "view", t, item_id=f"i{k}", category="tea"))
    for j in range(n):
        t += rnd.choice([5.0, 60.0, 600.0, 3600.0, 30_000.0, 100_000.0])
        k = rnd.randrange(visitors)
        v, u = f"v{k}", f"u{k}"
        item = f"i{rnd.randrange(12)}"
        category = rnd.choice(CATEGORIES)
        tags = tuple(rnd.sample(CATEGORIES, rnd.choice([0, 0, 1, 2])))
        kind = rnd.random()
        ts = t - rnd.choice([0.0, 0.0, 0.0, 120.0, 7200.0])  # some late
        eid = f"e{j}"
        if kind < 0.04:
            who = rnd.choice([v, u])
            out.append(command(Event(eid, who, "view", ts), FORGET, who, None, eid))
        elif kind < 0.07 and out:
            out.append(rnd.choice(out))  # re-sent
        elif not logged[k] and kind < 0.3:
            logged[k] = True
            value = rnd.choice([None, 4.0, 12.5])
            out.append(Event(eid, u, "purchase", ts, item, category, tags, value, anonymous_id=v))
        else:
            typ = rnd.choice(["view", "view", "cart", "purchase", "rate"])
            value = rnd.choice([None, 2.0, 5.0]) if typ in ("purchase", "rate") else None
            if logged[k] and rnd.random() < 0.7:
                out.append(Event(eid, u, typ, ts, item, category, tags, value))
            else:  # anonymous, before or after the login
                out.append(Event(eid, v, typ, ts, item, category, tags, value, anonymous_id=v))
    return out


@contextmanager
def lifecycle_only() -> Iterator[None]:
    """Every login taken by the Python lifecycle: none folded on the rows, at a stop or in
    the kernel."""
    real, fast, into = links.fold_visitor, loginrun.fast_logins, links.fold_profile
    links.fold_visitor = links.fold_profile = lambda *args: False  # type: ignore[assignment]
    loginrun.fast_logins = lambda *args, **kwargs: None  # type: ignore[assignment]
    try:
        yield
    finally:
        links.fold_visitor = real  # type: ignore[assignment]
        loginrun.fast_logins = fast  # type: ignore[assignment]
        links.fold_profile = into  # type: ignore[assignment]


def assert_same(
    batches: list[list[Event]], taken: list[int] | None = None, **changes: object
) -> Core:
    """The stored state is that of every login taken by the lifecycle: every row and meta blob
    to the byte (the population's too: its days' keys in the same order); and where the
    batches end changes nothing. ``taken``: add the run's logins there ([by the lifecycle,
    folded on the rows])."""
    cfg = config(**changes)  # type: ignore[arg-type]
    with lifecycle_only():
        reference, _ = run(cfg, batches)
    with counted_folds() as counts:
        compiled, core = run(cfg, batches)
    if taken is not None:
        taken[0] += counts[0]
        taken[1] += counts[1]
    assert_batch_free(cfg, batches, singles=0)
    a, b = _snapshot(reference, cfg), _snapshot(compiled, cfg)
    assert a["rows"]["profile"], "the run made profiles"
    for ns in a["rows"]:
        assert a["rows"][ns] == b["rows"][ns], ns
    assert a["meta"][POPULATION] == b["meta"][POPULATION]
    assert a["meta"] == b["meta"]
    return core


def split(events: list[Event], cuts: list[int]) -> list[list[Event]]:
    bounds = [0, *sorted({c % len(events) for c in cuts}), len(events)]
    return [events[a:b] for a, b in pairwise(bounds) if b > a]


@contextmanager
def counted_folds() -> Iterator[list[int]]:
    """Counts of the logins the rows took ([general path, folded on the rows]): at a stop
    (``foldnew.fold_visitor``) or in the kernel (``loginrun.run_folding``)."""
    real, book = links.fold_visitor, foldnew.book_fold
    taken = [0, 0]

    def fold_visitor(*args: object) -> bool:
        done = real(*args)  # type: ignore[arg-type]
        taken[0] += not done
        return done

    def book_fold(*args: object) -> None:
        taken[1] += 1
        book(*args)  # type: ignore[arg-type]

    links.fold_visitor = fold_visitor  # type: ignore[assignment]
    foldnew.book_fold = loginrun.book_fold = book_fold  # type: ignore[assignment]
    try:
        yield taken
    finally:
        links.fold_visitor = real  # type: ignore[assignment]
        foldnew.book_fold = loginrun.book_fold = book  # type: ignore[assignment]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    velocity=st.booleans(),
    ttl=st.sampled_from(["", "1d"]),
    anomaly=st.booleans(),
)
def test_logins_folded_on_rows_give_the_lifecycles_state(
    seed: int, cuts: list[int], velocity: bool, ttl: str, anomaly: bool
) -> None:
    events = stream(seed)
    assert_same(split(events, cuts), ttl=ttl, velocity=velocity, anomaly=anomaly)


def test_both_kinds_of_login_occur_and_match() -> None:
    events = stream(3)
    book = loginrun.book_link
    into = [0]

    def book_link(*args: object) -> None:  # a login into a profile, folded in the kernel
        into[0] += 1
        book(*args)  # type: ignore[arg-type]

    loginrun.book_link = book_link  # type: ignore[assignment]
    try:
        for velocity in (True, False):
            for size in (17, 100_000):
                taken = [0, 0]
                into[0] = 0
                core = assert_same(split(events, list(range(size, len(events), size))), taken,
                                   velocity=velocity)  # fmt: skip
                general, folded = taken
                assert folded > 0, "logins into new users are folded on the rows"
                assert general + into[0] > 0, "logins into users with a profile occur too"
                assert core.compiled.stopped >= folded
    finally:
        loginrun.book_link = book  # type: ignore[assignment]


def test_a_login_into_a_new_user_with_interests_past_half_of_top_k() -> None:
    # the merge keeps the interests ``keep_top_interests`` keeps: three of a top 4, all of them
    t = 1.8e9
    visit = [
        Event(f"a{k}", "anon", "view", t + k, item_id=f"i{k}", category=c, anonymous_id="anon")
        for k, c in enumerate(["tea", "cups", "books", "tea"])
    ]
    login = Event("l", "new", "purchase", t + 86_400 * 40, item_id="i9", anonymous_id="anon",
                  value=3.0)  # fmt: skip
    later = Event("b", "anon", "view", t + 86_400 * 40 + 5, item_id="i2", anonymous_id="anon")
    taken = [0, 0]
    assert_same([[*visit, login, later]], taken)
    assert taken == [0, 1]

"""Logins into users who have a profile, folded inside the kernel call (``engine.loginrun`` with
``foldinto.book_into``), give the state of the same logins taken by the Python lifecycle, to
the byte, and that of the stops the kernel made for them before (``loginrun.INTO_PROFILES``
off: each such login a Python stop, folded on the rows there).

The streams are a shop of returning customers: each session browses under an anonymous id of
its own and logs in at a cart or a purchase, mostly into a user who has a profile already (from
an earlier session, of this batch or of an earlier one); some sessions log in at their first
event (a visitor without a profile: a link only), some never; with late and re-sent events,
velocity counts and the anomaly detector on and off, in batches cut anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st
from test_compiled import run
from test_compiled_lifecycle import _snapshot, config
from test_fold_into import with_merges
from test_fold_new import CATEGORIES, lifecycle_only, split

from liveprofile.engine import loginrun
from liveprofile.engine.core import Core
from liveprofile.events import Event
from liveprofile.store.layout import POPULATION


def returning(seed: int, users: int = 6, sessions: int = 40, n: int = 300) -> list[Event]:
    """Session ``s{j}`` of user ``u{j % users}``: views (and carts) under the anonymous id
    ``s{j}`` until a login (some at the session's first event, some never), then the user's
    events under the user id; sessions interleave."""
    rnd = random.Random(seed)
    out: list[Event] = []
    t = 1.7e9
    logged = [rnd.random() < 0.1 for _ in range(sessions)]  # sessions never logged in
    started = [False] * sessions
    for j in range(n):
        t += rnd.choice([5.0, 60.0, 600.0, 3600.0, 30_000.0])
        s = min(int(rnd.expovariate(1.0) * sessions / 6 + j * sessions / n), sessions - 1)
        anon, user = f"s{s}", f"u{s % users}"
        ts = t - rnd.choice([0.0, 0.0, 0.0, 120.0, 7200.0])  # some late
        item, category = f"i{rnd.randrange(12)}", rnd.choice(CATEGORIES)
        tags = tuple(rnd.sample(CATEGORIES, rnd.choice([0, 0, 1, 2])))
        eid = f"e{j}"
        if rnd.random() < 0.04 and out:
            out.append(rnd.choice(out))  # re-sent
        elif not logged[s] and rnd.random() < (0.15 if not started[s] else 0.25):
            logged[s] = True
            kind = rnd.choice(["cart", "purchase"])
            value = rnd.choice([None, 4.0, 12.5]) if kind == "purchase" else None
            out.append(Event(eid, user, kind, ts, item, category, tags, value, anonymous_id=anon))
        else:
            kind = rnd.choice(["view", "view", "cart", "purchase", "rate"])
            value = rnd.choice([None, 2.0, 5.0]) if kind in ("purchase", "rate") else None
            if logged[s]:
                out.append(Event(eid, user, kind, ts, item, category, tags, value))
            else:
                out.append(Event(eid, anon, kind, ts, item, category, tags, value,
                                 anonymous_id=anon))  # fmt: skip
        started[s] = True
    return out


@contextmanager
def stopping() -> Iterator[None]:
    """Logins into users with a profile stop the kernel, as they did before it folded them."""
    loginrun.INTO_PROFILES = False
    try:
        yield
    finally:
        loginrun.INTO_PROFILES = True


def assert_as_stops(batches: list[list[Event]], **changes: object) -> Core:
    """The stored state of the logins folded in the kernel is that of the kernel stopping at
    each login into a profile, and of every login taken by the lifecycle
    (``test_fold_new.lifecycle_only``), to the byte; returns the step that folded them."""
    cfg = config(**changes)  # type: ignore[arg-type]
    with lifecycle_only():
        reference, _ = run(cfg, batches)
    with stopping():
        stopped, old = run(cfg, batches)
    folded, core = run(cfg, batches)
    want = _snapshot(folded, cfg)
    assert want["rows"]["profile"], "the run made profiles"
    for store in (reference, stopped):
        got = _snapshot(store, cfg)
        for ns in want["rows"]:
            assert got["rows"][ns] == want["rows"][ns], ns
        assert got["meta"][POPULATION] == want["meta"][POPULATION]
        assert got["meta"] == want["meta"]
    assert core.compiled is not None and old.compiled is not None
    assert core.compiled.stopped == old.compiled.stopped  # the same logins, folded elsewhere
    return core


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    velocity=st.booleans(),
    anomaly=st.booleans(),
)
def test_returning_customers_folded_in_the_kernel_give_the_stops_state(
    seed: int, cuts: list[int], velocity: bool, anomaly: bool
) -> None:
    events = returning(seed)
    assert_as_stops(split(events, cuts), velocity=velocity, anomaly=anomaly)


def test_returning_customers_take_no_python_stop() -> None:
    events = returning(4, sessions=60, n=500)
    logins = [e for e in events if e.anonymous_id is not None and e.user != e.anonymous_id]
    assert len(logins) > 30
    for velocity, anomaly in ((True, False), (False, False), (True, True)):
        assert_as_stops([events], velocity=velocity, anomaly=anomaly)
        cfg = config(velocity=velocity, anomaly=anomaly)
        _, core = run(cfg, [events])
        with stopping():
            _, old = run(cfg, [events])
        assert core.compiled is not None and old.compiled is not None
        assert core.compiled.paused == 0, "every login folded or linked in the kernel"
        assert old.compiled.paused > 10, "the logins into profiles stopped the kernel"
        assert core.compiled.stopped == old.compiled.stopped


def test_key_outcomes_past_the_rows_room_widen_them_and_resume() -> None:
    # a user and a visitor each viewing distinct items, with no purchase in the day after:
    # the key outcomes of both, merged, are more than the rows hold, and the kernel returns
    # for wider rows at the login, then goes on
    t, day = 1.8e9, 86_400.0
    user = [Event(f"u{k}", "u", "view", t + k, item_id=f"i{k}") for k in range(6)]
    user.append(Event("u9", "u", "cart", t + 3 * day, item_id="i0"))
    visit = [
        Event(f"a{k}", "s", "view", t + 4 * day + k, item_id=f"j{k}", anonymous_id="s")
        for k in range(6)
    ]
    visit.append(Event("a9", "s", "cart", t + 7 * day, item_id="j0", anonymous_id="s"))
    login = Event("l", "u", "cart", t + 8 * day, item_id="i0", anonymous_id="s")
    later = Event("b", "u", "view", t + 9 * day, item_id="i1")
    for batches in ([user, [*visit, login, later]], [[*user, *visit, login, later]]):
        with widened() as widths:
            assert_as_stops(batches)
        assert widths, "the rows were widened for the merged key outcomes"


@contextmanager
def widened() -> Iterator[list[int]]:
    """The widths the kernel's folds asked the key outcomes' rows to have."""
    real = loginrun.widen
    widths: list[int] = []

    def widen(stops: object, width: dict[str, int]) -> object:
        widths.append(width["okey"])
        return real(stops, width)  # type: ignore[arg-type]

    loginrun.widen = widen  # type: ignore[assignment]
    try:
        yield widths
    finally:
        loginrun.widen = real


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    merges=st.integers(1, 3),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
    velocity=st.booleans(),
)
def test_logins_around_merges_are_folded_in_the_kernel_and_give_the_lifecycles_state(
    seed: int, merges: int, cuts: list[int], velocity: bool
) -> None:
    """A ``$merge`` stops the kernel for the Python lifecycle; the logins of its batch around
    it are folded in the kernel all the same (those after it planned again from the links it
    left), and the state is that of every login taken by the lifecycle, to the byte."""
    events = with_merges(returning(seed), seed, merges)
    batches = split(events, cuts)
    cfg = config(velocity=velocity)
    with lifecycle_only():
        reference, _ = run(cfg, batches)
    folded, _ = run(cfg, batches)
    want, got = _snapshot(reference, cfg), _snapshot(folded, cfg)
    assert got["rows"] == want["rows"]
    assert got["meta"] == want["meta"]


def test_the_logins_around_a_merge_are_folded_in_the_kernel() -> None:
    """The kernel returns to Python for a ``$merge``; the logins before it were planned as
    folds, and those after it are planned again from the links it left."""
    events = returning(4, sessions=60, n=500)
    logins = [k for k, e in enumerate(events) if e.anonymous_id not in (None, e.user)]
    assert len(logins) > 30
    at = logins[len(logins) // 3]  # a merge a third of the way into the batch's logins
    merge = Event("m", "u1", "$merge", events[at].ts, anonymous_id="u2")
    batch = [*events[:at], merge, *events[at:]]
    cfg = config(velocity=True)
    _, plain = run(cfg, [events])
    merged, core = run(cfg, [batch])
    assert core.compiled is not None and plain.compiled is not None
    assert plain.compiled.paused == 0
    # the merge returns to Python, and so may the logins into the id it merged away (a
    # visitor's id to the plan before it, an alias after it)
    into_gone = {k for k in logins if events[k].user == "u2"}
    assert len(into_gone) < len(logins) / 3
    assert 1 <= core.compiled.paused <= 1 + len(into_gone)
    with lifecycle_only():
        reference, _ = run(cfg, [batch])
    assert _snapshot(merged, cfg) == _snapshot(reference, cfg)

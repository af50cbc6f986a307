"""Logins folded inside the kernel (``engine.loginrun``) give the lifecycle's state.

A batch whose logins go into users without a profile runs in one compiled call: the kernel folds
each visitor into its new user on the rows, without a Python stop; a login into a user with a
profile stops there for the lifecycle when ``loginrun.INTO_PROFILES`` is off (else the kernel
folds it too: ``test_fold_into_kernel``). Streams without commands (``test_fold_new``'s,
erasures left out, so that every batch may take this path), in batches cut anywhere, with and
without velocity counts, must store the state of a run whose every login the Python
lifecycle takes, to the byte; with an anomaly detector too (it scores a visitor's events
before the login as the user's, in the batch's order).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st
from test_compiled import run
from test_compiled_lifecycle import config
from test_fold_new import assert_same, counted_folds, split, stream

from liveprofile.engine import links, loginrun
from liveprofile.engine.core import Core
from liveprofile.events import Event
from liveprofile.events.schema import COMMANDS


def plain_stream(seed: int, **sizes: int) -> list[Event]:
    return [e for e in stream(seed, **sizes) if e.type not in COMMANDS]


@contextmanager
def counted_stops() -> Iterator[list[int]]:
    """How many times the Python lifecycle ran at a stop."""
    real = links.Stops._stop
    stops = [0]

    def stop(self: links.Stops, e: int, ttl: float) -> None:
        stops[0] += 1
        real(self, e, ttl)

    links.Stops._stop = stop  # type: ignore[method-assign]
    try:
        yield stops
    finally:
        links.Stops._stop = real  # type: ignore[method-assign]


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    velocity=st.booleans(),
    anomaly=st.booleans(),
)
def test_logins_folded_in_the_kernel_give_the_lifecycles_state(
    seed: int, cuts: list[int], velocity: bool, anomaly: bool
) -> None:
    events = plain_stream(seed)
    assert_same(split(events, cuts), velocity=velocity, anomaly=anomaly)


def counted_run(
    events: list[Event], velocity: bool, anomaly: bool = False
) -> tuple[int, int, int, Core]:
    """One run of ``events`` in one batch: (logins taken by the lifecycle, logins folded on
    the rows, Python stops, the step)."""
    with counted_folds() as taken, counted_stops() as stops:
        _, core = run(config(velocity=velocity, anomaly=anomaly), [events])
    return taken[0], taken[1], stops[0], core


def test_logins_into_new_users_take_no_python_stop() -> None:
    # no user has a profile before its login: every login of a visitor with events before it
    # folds in the kernel (one without any has no row to fold: the kernel notes the link)
    events = plain_stream(5, visitors=12, known=0)
    for velocity, anomaly in ((True, False), (False, False), (True, True), (False, True)):
        assert_same([events], velocity=velocity, anomaly=anomaly)
        general, folded, stops, core = counted_run(events, velocity, anomaly)
        assert folded >= 8
        assert core.compiled is not None
        assert stops == general == core.compiled.paused
        assert core.compiled.stopped > folded + general  # the links only, too


def test_a_login_into_a_user_with_a_profile_stops_with_the_kernel_folding_new_users_only() -> None:
    events = plain_stream(3, known=3)
    assert_same([events], velocity=True)
    loginrun.INTO_PROFILES = False
    try:
        general, folded, stops, _ = counted_run(events, True)
    finally:
        loginrun.INTO_PROFILES = True
    assert folded > 0 and general > 0
    assert stops == general  # the logins into users with a profile (or without a visitor)
    general, folded, stops, _ = counted_run(events, True)  # (test_fold_into_kernel)
    assert stops == general == 0

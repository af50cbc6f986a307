"""Erasures and TTL expiry taken inside the compiled run (``engine.droprows``) give the state of
the same erasures and expiries taken by the Python lifecycle at the kernel's stops.

Streams of visitors who log in, users erased before and after, ids erased while linked, re-sent
and late events, profiles idle past the TTL, and (in ``mixed``) operators' merges, in batches
cut anywhere, with and without velocity counts: the stored state is that of the run with
``droprows.DROP_ROWS`` off (every erasure and expiry a Python stop), to the byte. An erasure of
a profile held as bytes decodes no profile, and the batches of such streams keep folding their
logins in the kernel.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_compiled import chunks, messed_up, run, synthetic
from test_compiled_lifecycle import _snapshot, command, config, mixed
from test_fold_new import split, stream
from test_login_kernel import counted_stops

from liveprofile.engine import droprows
from liveprofile.engine.core import Core
from liveprofile.engine.lazyprofiles import ProfileMap
from liveprofile.engine.local import apply_batch
from liveprofile.engine.state import PipelineState
from liveprofile.events import Event
from liveprofile.events.schema import FORGET
from liveprofile.events.sources import Batch
from liveprofile.profile.state import decode_profile
from liveprofile.store import MemoryStore
from liveprofile.store.layout import POPULATION, PROFILES


@contextmanager
def stops_only() -> Iterator[None]:
    """Every erasure and expiry taken by the Python lifecycle at a stop."""
    droprows.DROP_ROWS = False
    try:
        yield
    finally:
        droprows.DROP_ROWS = True


@contextmanager
def counted_decodes() -> Iterator[list[int]]:
    """How many held profiles were decoded into objects."""
    real = ProfileMap._decode
    decodes = [0]

    def decode(self: ProfileMap, user: str, p: object) -> object:
        if self.held(user) or self.holds_velocity(user):
            decodes[0] += 1
        return real(self, user, p)  # type: ignore[arg-type]

    ProfileMap._decode = decode  # type: ignore[assignment,method-assign]
    try:
        yield decodes
    finally:
        ProfileMap._decode = real  # type: ignore[method-assign]


def assert_same(
    batches: list[list[Event]], columns: bool = False, **changes: object
) -> tuple[int, int]:
    """The stored state is that of every erasure and expiry at a stop, every row and meta
    blob to the byte; returns the Python stops (with the stops only, with the drops).
    ``columns``: the batches as a source that lays them out as columns gives them."""
    cfg = config(**changes)  # type: ignore[arg-type]
    with stops_only(), counted_stops() as before:
        reference, _ = run(cfg, batches, columns)
    with counted_stops() as after:
        dropped, _ = run(cfg, batches, columns)
    a, b = _snapshot(reference, cfg), _snapshot(dropped, cfg)
    assert a["rows"]["profile"], "the run made profiles"
    for ns in a["rows"]:
        assert a["rows"][ns] == b["rows"][ns], ns
    assert a["meta"][POPULATION] == b["meta"][POPULATION]
    assert a["meta"] == b["meta"]
    return before[0], after[0]


def with_forgets(seed: int, events: list[Event], every: int) -> list[Event]:
    """``events`` with a ``$forget`` of an id seen so far after about every ``every``."""
    rnd = random.Random(seed)
    out: list[Event] = []
    seen: list[str] = []
    for j, e in enumerate(events):
        out.append(e)
        seen.append(e.user)
        if e.anonymous_id is not None:
            seen.append(e.anonymous_id)
        if rnd.randrange(every) == 0:
            who = rnd.choice(seen)
            out.append(command(e, FORGET, who, None, f"f{j}"))
    return out


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 10_000), max_size=5),
    ttl=st.sampled_from(["", "1d", "3d"]),
    velocity=st.booleans(),
)
def test_drops_in_the_kernel_give_the_stops_state(
    seed: int, cuts: list[int], ttl: str, velocity: bool
) -> None:
    events = with_forgets(seed, stream(seed, visitors=14, known=4), 25)
    assert_same(split(events, cuts), ttl=ttl, velocity=velocity)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 1000), size=st.sampled_from([37, 150, 100_000]))
def test_drops_beside_merges_give_the_stops_state(seed: int, size: int) -> None:
    events = mixed(seed)
    batches = [events[k : k + size] for k in range(0, len(events), size)]
    assert_same(batches, ttl="1d")


def test_erasures_and_expiry_stop_the_kernel_less() -> None:
    events = with_forgets(3, stream(3, visitors=20, known=0, n=600), 30)
    with_stops, with_drops = assert_same([events], ttl="1d")
    # 20 logins, each of a visitor into its user, 20 erasures, many expiries: the logins
    # and a few expiries at a linked visitor's own events stop (472 stops, 29 measured)
    logins = sum(1 for e in events if e.anonymous_id not in (None, e.user))
    assert with_drops < logins + (with_stops - logins) // 10


@pytest.mark.parametrize("size", [40, 100_000])
def test_expiry_of_batches_as_columns_takes_no_stop(size: int) -> None:
    # plain events (no links, no commands), as a JSON or Kafka source lays them out
    plain = messed_up(synthetic(seed=12), seed=13)
    with_stops, with_drops = assert_same(chunks(plain, size), columns=True, ttl="1d")
    assert with_stops > 0 and with_drops == 0


def test_an_erasure_decodes_no_profile() -> None:
    # the users' profiles are held as bytes after their first batch; the second erases half
    # of them: the kernel empties their rows, the lifecycle deletes the objects as they are
    cfg = config(velocity=False, ttl="30d")
    first = [Event(f"e{k}", f"u{k}", "view", 1.7e9 + k, item_id="i1") for k in range(20)]
    erased = [f"u{k}" for k in range(0, 20, 2)]
    second = [command(first[0], FORGET, u, None, f"f{u}") for u in erased]
    second += [Event(f"g{k}", f"u{k}", "view", 1.7e9 + 100 + k, item_id="i2") for k in range(20)]
    store, core = MemoryStore(), Core(cfg)
    state = PipelineState.load(store, cfg)
    apply_batch(core, state, store, "test", Batch(events=first, offset=len(first)))
    profiles = state.profiles
    assert isinstance(profiles, ProfileMap)
    assert all(profiles.held(u) for u in erased)
    with counted_decodes() as decodes:
        apply_batch(core, state, store, "test", Batch(events=second, offset=40))
    assert decodes[0] == 0
    assert core.compiled.dropped == len(erased) and core.compiled.stopped == 0
    rows = dict(store.scan(PROFILES))
    assert all(decode_profile(rows[u], u).n == 1 for u in erased)  # made again, afresh
    assert all(decode_profile(rows[f"u{k}"], f"u{k}").n == 2 for k in range(1, 20, 2))

"""The screen follows only the ids its suspect events name (``engine.screen``): a batch gets
the same verdicts as when every event is judged in order, as with ``events.allowed_lateness``
wide enough that no event is late.

Tangled batches (``engine_streams``: logins back and forth, merges, erasures, expiry, clashing
ids, values out of bounds, events from the future) are screened twice on fresh state, and on
state a first batch left behind: once as the runner does, once with every event a suspect.
"""

from __future__ import annotations

import msgspec
import pytest
from engine_streams import streams
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveprofile.config import EventsConfig, PipelineConfig, RunConfig
from liveprofile.engine.core import Core
from liveprofile.engine.local import apply_batch
from liveprofile.engine.screen import screen
from liveprofile.errors import LiveprofileError
from liveprofile.events.schema import EventParser
from liveprofile.events.sources import Batch
from liveprofile.store import MemoryStore

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

NOW = 1.7e9
PARSER = EventParser(commands=True)


def _events(lines: list[bytes]) -> list:  # type: ignore[type-arg]
    out = []
    for line in lines:
        try:
            out.append(PARSER.parse_json(line))
        except (LiveprofileError, msgspec.DecodeError, ValueError):
            continue
    return out


def _verdicts(lines: list[bytes], first: list[bytes], ttl: str, wide: bool) -> tuple[list, list]:  # type: ignore[type-arg]
    events = EventsConfig(max_value=500.0, allowed_lateness="100000d" if wide else "")
    config = PipelineConfig(tasks=[], events=events, run=RunConfig(profile_ttl=ttl))
    core, store = Core(config), MemoryStore()
    state = core.new_state()
    if first:  # a batch before, so that stored profiles count as known users
        before = Batch(_events(first))
        screen(core, state, store, "test", before, now=NOW)
        apply_batch(core, state, store, "test", before)
    batch = Batch(_events(lines))
    screen(core, state, store, "test", batch, now=NOW)
    kept = [e.event_id for e in batch.events]
    return kept, [(d.raw, d.reason) for d in batch.dead_letters]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(lines=streams(), first=streams(), ttl=st.sampled_from(["", "2h", "3d"]))
def test_the_verdicts_do_not_depend_on_which_events_are_followed(
    lines: list[bytes], first: list[bytes], ttl: str
) -> None:
    assert _verdicts(lines, first, ttl, wide=False) == _verdicts(lines, first, ttl, wide=True)


def _without_commands(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if b"$merge" not in line and b"$forget" not in line]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(lines=streams().map(_without_commands), first=streams().map(_without_commands))
def test_a_batch_of_logins_and_visitors_alone_gets_the_verdicts_of_every_event_judged(
    lines: list[bytes], first: list[bytes]
) -> None:
    """With no TTL and no command, the screen passes over the visitors' own events up to each
    one's first login in the batch (``screen._changing``)."""
    assert _verdicts(lines, first, "", wide=False) == _verdicts(lines, first, "", wide=True)


def _line(**fields: object) -> bytes:
    return msgspec.json.encode(fields)


def test_a_login_into_an_id_that_acted_as_a_user_earlier_in_the_batch_is_refused() -> None:
    """The known-user check sees the plain events between the suspects, also those of ids
    no suspect is about until the login."""
    lines = [
        _line(event_id="e1", type="view", ts=1.6e9, user_id="u1"),
        _line(event_id="e2", type="view", ts=1.6e9 + 1, user_id="u2"),
        _line(event_id="e3", type="view", ts=1.6e9 + 2, user_id="u3", value=1e9),  # too large
        _line(event_id="e4", type="purchase", ts=1.6e9 + 3, user_id="u2", anonymous_id="u1"),
        _line(event_id="e5", type="view", ts=1.6e9 + 4, user_id="v1", anonymous_id="v1"),
        _line(event_id="e6", type="purchase", ts=1.6e9 + 5, user_id="u2", anonymous_id="v1"),
    ]
    for wide in (False, True):
        kept, dead = _verdicts(lines, [], "", wide=wide)
        assert kept == ["e1", "e2", "e5", "e6"]
        assert [reason.split(" ")[0] for _, reason in dead] == ["'value'", "'anonymous_id'"]


@pytest.mark.parametrize("linked_before", [True, False])
def test_an_event_under_a_linked_visitors_id_leaves_the_id_free_to_log_in(
    linked_before: bool,
) -> None:
    """An event sent with a linked visitor's id as ``user_id`` is its user's (the step moves
    it there), so the id is no known user: a login from it to another user passes, in the
    same batch as after a batch boundary. The link is made in a batch before, or by a login
    earlier in the same batch."""
    login = _line(event_id="e1", type="purchase", ts=1.6e9, user_id="u1", anonymous_id="v1")
    first = [_line(event_id="e0", type="view", ts=1.6e9 - 1, anonymous_id="v1")]
    lines = [
        _line(event_id="e2", type="view", ts=1.6e9 + 1, user_id="v1"),
        _line(event_id="e3", type="purchase", ts=1.6e9 + 2, user_id="u2", anonymous_id="v1"),
    ]
    if linked_before:
        first.append(login)
    else:
        lines.insert(0, login)
    expected = [e for e in ("e1", "e2", "e3") if not linked_before or e != "e1"]
    for wide in (False, True):
        kept, dead = _verdicts(lines, first, "", wide=wide)
        assert (kept, dead) == (expected, [])
    # the step agrees: the event went to u1, the login moved the link of v1 to u2
    config = PipelineConfig(tasks=[])
    core, store = Core(config), MemoryStore()
    state = core.new_state()
    for batch in (Batch(_events(first)), Batch(_events(lines))):
        screen(core, state, store, "test", batch, now=NOW)
        apply_batch(core, state, store, "test", batch)
    assert state.aliases["v1"] == "u2" and "v1" not in state.profiles
    assert state.profiles["u1"].n == 3 and "u2" in state.profiles

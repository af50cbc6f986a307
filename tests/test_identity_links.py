"""Identity links after expiry and ``$merge``, and re-sent logins, wherever batches end.

Expiry removes every link that leads to the expired user (not only those in its alias list:
visitors linked before they sent anything, links past the alias cap, links to users merged
into it), as erasure does. A ``$merge`` of user A into B re-points the links that led to A,
so a visitor linked to A before the merge sends its later events to B. A login re-sent with
the same event id (a producer retry) counts as a duplicate and changes nothing.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import pytest
from test_state_properties import check_batch_boundaries, dump, place, run, write

from liveprofile.config import PipelineConfig, RunConfig
from liveprofile.events.dedup import DedupWindow, Repeats
from liveprofile.profile.identity import MAX_ALIASES
from liveprofile.profile.state import decode_profile
from liveprofile.store.layout import ALIASES, CHECKPOINT, DEDUP, PROFILES, decode_checkpoint

T0 = 1_700_006_400.0
DAY = 86_400.0


def _lines(rows: list[dict[str, Any]]) -> list[bytes]:
    """Rows as JSON lines; ``event_id`` and ``ts`` default to ``e{k}`` and ``T0 + k``."""
    return [
        msgspec.json.encode({"event_id": f"e{k}", "ts": T0 + k, **row})
        for k, row in enumerate(rows)
    ]


def _both(rows: list[dict[str, Any]], sizes: list[int], ttl: str = "") -> dict[str, Any]:
    """Replay ``rows`` in batches of ``sizes``: the stored state, which is the state of one
    batch of them all where batch boundaries may change nothing (``check_batch_boundaries``)."""
    config = PipelineConfig(run=RunConfig(profile_ttl=ttl))
    lines = _lines(rows)
    check_batch_boundaries(config, lines, sizes)
    with place("sqlite") as (tmp, url):
        source = write(tmp, lines)
        run(config, source, url, sizes)
        return dump(config, url, source)


def _links(state: dict[str, Any]) -> dict[str, str]:
    return {a: u.decode() for a, u in state["rows"][ALIASES].items()}


def _events(state: dict[str, Any]) -> dict[str, int]:
    """Each stored profile's event count."""
    return {u: decode_profile(bytes(b), u).n for u, b in state["rows"][PROFILES].items()}


def _no_link_to_a_gone_id(state: dict[str, Any]) -> None:
    links, profiles = _links(state), set(state["rows"][PROFILES])
    for anon, user in links.items():
        assert user not in links, f"{anon} -> {user} -> {links[user]}: links go one step"
    for anon in links:
        assert anon not in profiles, f"{anon} is linked and has a profile of its own"


def _late(user: str, days: float, **row: Any) -> dict[str, Any]:
    return {"user_id": user, "type": "view", "ts": T0 + days * DAY, **row}


# -- 1. expiry removes every link to the expired user ---------------------------------------------


@pytest.mark.parametrize("sizes", [[1], [2], [50]])
def test_expiry_removes_the_link_of_a_visitor_that_sent_nothing_before(sizes: list[int]) -> None:
    rows = [
        {"user_id": "u1", "anonymous_id": "v0", "type": "purchase", "value": 3.0},
        _late("u9", 3),  # u1 idle past the TTL: expires
        _late("v0", 3.01),  # v0 is no one's visitor any more
    ]
    state = _both(rows, sizes, ttl="1d")
    assert _links(state) == {}
    assert _events(state) == {"u9": 1, "v0": 1}


@pytest.mark.parametrize("sizes", [[1], [7], [500]])
def test_expiry_removes_links_past_the_alias_list(sizes: list[int]) -> None:
    n = MAX_ALIASES + 5
    rows: list[dict[str, Any]] = []
    for k in range(n):
        rows.append({"user_id": f"v{k}", "anonymous_id": f"v{k}", "type": "view"})
        rows.append({"user_id": "u1", "anonymous_id": f"v{k}", "type": "view"})
    rows += [_late("u9", 3), _late("v0", 3.01), _late(f"v{n - 1}", 3.02)]
    state = _both(rows, sizes, ttl="1d")
    assert _links(state) == {}
    assert _events(state) == {"u9": 1, "v0": 1, f"v{n - 1}": 1}


@pytest.mark.parametrize("sizes", [[1], [3], [50]])
def test_expiry_removes_links_to_a_user_merged_into_the_expired_one(sizes: list[int]) -> None:
    rows = [
        {"user_id": "u1", "anonymous_id": "v0", "type": "view"},
        {"user_id": "u1", "type": "view"},
        {"user_id": "u2", "type": "view"},
        {"user_id": "u2", "anonymous_id": "u1", "type": "$merge"},
        _late("u9", 3),
        _late("v0", 3.01),
        _late("u1", 3.02),
    ]
    state = _both(rows, sizes, ttl="1d")
    assert _links(state) == {}
    assert _events(state) == {"u9": 1, "v0": 1, "u1": 1}


@pytest.mark.parametrize("sizes", [[1], [2]])
def test_a_user_back_after_the_ttl_drops_its_links_at_its_event(sizes: list[int]) -> None:
    rows = [
        {"user_id": "u1", "anonymous_id": "v0", "type": "view"},
        _late("u1", 3),  # idle past the TTL: expires before the event, its links with it
        _late("v0", 3.01),
    ]
    state = _both(rows, sizes, ttl="1d")
    assert _links(state) == {}
    assert _events(state) == {"u1": 1, "v0": 1}


# -- 2. links follow merges ---------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[1], [3], [4], [100]])
def test_a_visitor_linked_before_a_merge_sends_its_events_to_the_user_merged_into(
    sizes: list[int],
) -> None:
    rows = [
        {"user_id": "u1", "anonymous_id": "v0", "type": "purchase", "value": 2.0},  # no events
        {"user_id": "v5", "anonymous_id": "v5", "type": "view"},
        {"user_id": "u1", "anonymous_id": "v5", "type": "view"},  # folded: in the alias list
        {"user_id": "u2", "type": "view"},
        {"user_id": "u2", "anonymous_id": "u1", "type": "$merge"},
        {"user_id": "v0", "type": "view"},
        {"user_id": "v5", "anonymous_id": "v5", "type": "view"},
        {"user_id": "u1", "type": "view"},
    ]
    state = _both(rows, sizes)
    assert _links(state) == {"v0": "u2", "v5": "u2", "u1": "u2"}
    assert _events(state) == {"u2": 7}
    _no_link_to_a_gone_id(state)


@pytest.mark.parametrize("sizes", [[1], [2], [100]])
def test_merges_in_a_chain_leave_links_one_step(sizes: list[int]) -> None:
    rows = [
        {"user_id": "u1", "anonymous_id": "v0", "type": "view"},
        {"user_id": "u2", "type": "view"},
        {"user_id": "u2", "anonymous_id": "u1", "type": "$merge"},
        {"user_id": "u3", "type": "view"},
        {"user_id": "u3", "anonymous_id": "u2", "type": "$merge"},
        {"user_id": "v0", "type": "view"},
    ]
    state = _both(rows, sizes)
    assert _links(state) == {"v0": "u3", "u1": "u3", "u2": "u3"}
    assert _events(state) == {"u3": 4}


# -- 3. a re-sent login is a duplicate --------------------------------------------------------


@pytest.mark.parametrize("sizes", [[1], [2], [3], [10]])
def test_a_re_sent_login_counts_as_a_duplicate_and_changes_nothing(sizes: list[int]) -> None:
    login = {"event_id": "login", "user_id": "u1", "anonymous_id": "v0", "type": "view"}
    login = {**login, "ts": T0 + 1}
    rows = [
        {"event_id": "a", "user_id": "v0", "anonymous_id": "v0", "type": "view", "ts": T0},
        login,
        {"event_id": "b", "user_id": "v0", "type": "cart", "ts": T0 + 2},  # the user's event
        login,  # the producer's retry
        {"event_id": "c", "user_id": "u1", "type": "view", "ts": T0 + 3},
    ]
    once = _both([r for k, r in enumerate(rows) if k != 3], sizes)
    twice = _both(rows, sizes)
    assert twice["dead"] == [] and once["dead"] == []
    for ns in once["rows"]:
        if ns != DEDUP:  # the ids kept per batch: batches cut elsewhere
            assert twice["rows"][ns] == once["rows"][ns], ns
    assert decode_checkpoint(twice["meta"][CHECKPOINT]).duplicates == 1


def test_the_screen_tells_duplicates_as_the_step_will() -> None:
    """``Repeats`` (the screen's judgement) agrees with the de-duplication window the step
    applies after it, ids leaving a full window included."""
    rnd = random.Random(5)
    for size in (0, 1, 3, 8, 1000):
        window = DedupWindow(size)
        for _ in range(40):
            batch = [f"e{rnd.randrange(12)}" for _ in range(rnd.randrange(1, 9))]
            repeats = Repeats(window)
            told = []
            for event_id in batch:
                told.append(repeats.repeated(event_id))
                if not told[-1]:
                    repeats.passed(event_id)
            assert told == [not new for new in window.add_many(batch)], (size, batch)

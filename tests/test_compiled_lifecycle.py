"""Identity links, erasures, expiry and anomaly scores: batches that mix them with plain events
give the state of the same events in one batch and in one batch each (where batch boundaries may
change nothing), and the Python lifecycle runs only at the events that need it."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec
import pytest
from test_compiled import (
    SEGMENTS,
    TASKS,
    assert_batch_free,
    chunks,
    messed_up,
    snapshot,
    synthetic,
)
from test_state_properties import check_batch_boundaries

from liveprofile.config import PipelineConfig, ProfileConfig, RiskConfig, RunConfig
from liveprofile.engine.core import Core
from liveprofile.events import Event
from liveprofile.events.schema import FORGET, MERGE
from liveprofile.store import Store
from liveprofile.store.layout import ANOMALY


def config(ttl: str = "", anomaly: bool = False, velocity: bool = True) -> PipelineConfig:
    return PipelineConfig(
        tasks=TASKS,
        risk=RiskConfig(velocity=velocity, anomaly=anomaly, window_size=20),
        traits={"buyer": "frequency > 2"},
        segments=SEGMENTS,
        run=RunConfig(dedup_window=500, profile_ttl=ttl),
        profile=ProfileConfig(top_k=4, outcome_keys=3),
    )


T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z


def command(e: Event, kind: str, user: str, anon: str | None, event_id: str) -> Event:
    return msgspec.structs.replace(
        e, event_id=event_id, type=kind, user=user, anonymous_id=anon, item_id=None,
        category=None, tags=(), value=None,
    )  # fmt: skip


def mixed(seed: int) -> list[Event]:
    """Visitors who log in at their first purchase (with duplicates, late events and ratings),
    erasures of users, of linked anonymous ids and of visitors, and operators' merges."""
    rnd = random.Random(seed)
    events = messed_up(synthetic(seed=seed, logins=True), seed=seed + 1)
    users = sorted({e.user for e in events if e.anonymous_id is None})
    visitors = sorted({e.anonymous_id for e in events if e.anonymous_id is not None})
    out = list(events)
    for k in range(12):
        at = rnd.randrange(len(out))
        kind = rnd.choice(["user", "visitor", "merge"])
        base = out[at]
        if kind == "merge":
            extra = command(base, MERGE, rnd.choice(users), rnd.choice(visitors), f"merge-{k}")
        else:
            who = rnd.choice(users if kind == "user" else visitors)
            extra = command(base, FORGET, who, None, f"forget-{k}")
        out.insert(at + 1, extra)
    # a re-sent login and a re-sent erasure are duplicates
    logins = [e for e in out if e.anonymous_id not in (None, e.user)]
    out.insert(len(out) // 2, logins[len(logins) // 3])
    out.insert(len(out) - 5, next(e for e in out if e.type == FORGET))
    return out


def assert_same(batches: Sequence[Sequence[Event]], **changes: object) -> Core:
    """``test_compiled.assert_batch_free`` on :func:`config` with ``changes`` (links, the
    anomaly detector and expiry included)."""
    return assert_batch_free(config(**changes), batches, singles=500)  # type: ignore[arg-type]


def _snapshot(store: Store, config: PipelineConfig) -> dict[str, dict[str, object]]:
    shot = snapshot(store, config)
    meta = dict(shot["meta"])  # type: ignore[call-overload]
    meta[ANOMALY] = store.get_meta(ANOMALY)
    rows = dict(shot["rows"])  # type: ignore[call-overload]
    for ns in ("alias", "expiry"):
        rows[ns] = dict(store.scan(ns))
    return {"rows": rows, "meta": meta}


@pytest.mark.parametrize("size", [1, 23, 160, 100_000])
def test_links_erasures_and_merges_in_batches_give_the_same_state(size: int) -> None:
    events = mixed(seed=11)
    core = assert_same(chunks(events[:500] if size == 1 else events, size))
    assert core.compiled.stopped > 0


@pytest.mark.parametrize("size", [1, 40, 100_000])
def test_expiry_mid_batch_gives_the_same_state(size: int) -> None:
    # ten days of events, profiles idle for a day expire: users come back after expiring,
    # within a batch and across batches, visitors' links go with their profiles
    events = mixed(seed=12)
    batches = chunks(events[:500] if size == 1 else events, size)
    core = assert_same(batches, ttl="1d")
    assert core.compiled.stopped > 0


def test_expiry_alone_gives_the_same_state() -> None:
    # plain events, no links: profiles idle for a day expire within batches and between them
    plain = messed_up(synthetic(seed=12), seed=13)
    core = assert_same(chunks(plain, 40), ttl="1d")
    # without links, every expiry is the kernel's own (engine.droprows): no Python stop
    assert core.compiled.dropped > 0
    assert core.compiled.stopped == 0


def test_a_merged_link_outlives_the_expiry_of_the_user_it_led_to() -> None:
    """Found by comparing batchings (:func:`test_expiry_mid_batch_gives_the_same_state`).
    Visitor v1 browses, then logs in as u1 (v1 in u1's alias list); u1 idles past the TTL; an
    operator merges v1 into u2; u1 comes back. Where a batch ends between u1's idle day and the
    merge, u1 expires there (v1's link with it) and the merge links v1 to u2 afresh. In one
    batch the merge re-points v1's link to u2, and u1's profile, deleted at its next event as
    idle past the TTL, dropped v1's link with its alias list though the link led to u2 by then
    (``Lifecycle._delete`` now leaves an alias whose link leads to another user)."""
    day = 86400.0
    rows: list[dict[str, object]] = [
        {"anonymous_id": "v1", "type": "view", "ts": T0 - 60},
        {"user_id": "u1", "anonymous_id": "v1", "type": "view", "ts": T0},
        {"user_id": "u2", "type": "view", "ts": T0 + 3600},
        {"user_id": "u3", "type": "view", "ts": T0 + 2.5 * day},
        {"user_id": "u2", "anonymous_id": "v1", "type": "$merge", "ts": T0 + 3 * day},
        {"user_id": "u2", "type": "view", "ts": T0 + 3 * day + 3600},
        {"user_id": "u1", "type": "view", "ts": T0 + 3 * day + 7200},
    ]
    lines = [msgspec.json.encode({"event_id": f"e{k}", **r}) for k, r in enumerate(rows)]
    check_batch_boundaries(PipelineConfig(run=RunConfig(profile_ttl="1d")), lines, [1])


@pytest.mark.parametrize("size", [1, 50, 100_000])
def test_anomaly_scores_give_the_same_state(size: int) -> None:
    events = mixed(seed=13)
    batches = chunks(events[:300] if size == 1 else events, size)
    assert_same(batches, anomaly=True)
    assert_same(batches, anomaly=True, velocity=False, ttl="2d")


def test_plain_batches_with_ttl_and_anomaly_take_no_stop() -> None:
    events = messed_up(synthetic(seed=14), seed=15)
    core = assert_same(chunks(events, 200), anomaly=True, ttl="30d")
    assert core.compiled.stopped == 0

"""Properties of the compiled engine's stored state, checked on it alone (no second engine).

Random pipelines (every kind of task, segments, traits, profile TTL, velocity counts, anomaly
scores, behaviour features, small caps on what a profile and a task keep, profiles evicted from
memory between batches) replay tangled streams (``engine_streams``: identity links back and
forth, operator merges, erasures, expiry, duplicates and clashing ids, late events, messy and
malformed records) through the local runner into SQLite, and the store is read back whole:

- **batch boundaries**: where batches end changes nothing but what is numbered by batch (see
  ``test_state_properties.batch_independent``), and every input line is counted once, as an
  event, a duplicate or a dead letter;
- **restarts**: closing the runner after any batches and opening a new one on the same store
  file, with batch sizes changing from batch to batch, gives the same bytes as one run;
- **replays**: the stream sent a second time changes no row or blob, only the counters;
- **arrival order**: users' streams interleaved another way give the same profiles (see
  :func:`test_interleaving_users_changes_no_profile` for what is promised);
- **erasure**: after a ``$forget`` no profile, link, membership or alias list holds the
  erased id, and no link leads to it.

Each bug these found has a test of its own in this module.
"""

from __future__ import annotations

import math
import random
from typing import Any

import msgspec
import pytest
from engine_streams import ALL_TASKS, DAY, IDS, T0, configs, op, stream, streams
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from test_state_properties import (
    SEGMENTS,
    TIMELESS,
    _orderless,
    assert_close,
    assert_same_store,
    batch_independent,
    canonical,
    check_batch_boundaries,
    dump,
    place,
    run,
    write,
)

from liveprofile.config import EventsConfig, FeatureConfig, PipelineConfig, RiskConfig, RunConfig
from liveprofile.errors import InvalidEvent
from liveprofile.events import jsonbatch
from liveprofile.events.schema import EventParser, encode_event
from liveprofile.profile.items import decode_item
from liveprofile.profile.state import decode_profile
from liveprofile.serving.views import profile_view
from liveprofile.store import open_store
from liveprofile.store.layout import (
    ALIASES,
    CHECKPOINT,
    ITEMS,
    POPULATION,
    PROFILES,
    decode_checkpoint,
    segment_namespace,
)

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")

FEW = settings(
    max_examples=15,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.generate],
    print_blob=True,
)
SIZES = st.lists(st.integers(1, 25), min_size=1, max_size=5)


def _counted(lines: list[bytes], state: dict[str, Any]) -> None:
    """Every line is one event, one duplicate or one dead letter."""
    ckpt = decode_checkpoint(state["meta"][CHECKPOINT])
    assert ckpt.events + ckpt.duplicates + ckpt.dead_letters == len(lines)
    assert ckpt.dead_letters == len(state["dead"])


# -- batch boundaries and restarts --------------------------------------------------------------


@FEW
@given(config=configs(per_batch=False), lines=streams(), sizes=SIZES)
def test_batch_boundaries_change_nothing_but_batch_numbers(
    config: PipelineConfig, lines: list[bytes], sizes: list[int]
) -> None:
    check_batch_boundaries(config, lines, sizes)
    with place("sqlite") as (tmp, url):
        source = write(tmp, lines)
        run(config, source, url, sizes)
        _counted(lines, dump(config, url, source))


@FEW
@given(
    config=configs(),
    lines=streams(),
    sizes=SIZES,
    stops=st.lists(st.integers(1, 10), min_size=1, max_size=3),
)
def test_restarts_between_batches_of_changing_sizes_change_nothing(
    config: PipelineConfig, lines: list[bytes], sizes: list[int], stops: list[int]
) -> None:
    """Time-dependent segments included: a restart keeps the batches as they were."""
    with place("sqlite") as (tmp, once), place("sqlite") as (_, resumed):
        source = write(tmp, lines)
        run(config, source, once, sizes)
        run(config, source, resumed, sizes, stop_after=stops)
        a = canonical(config, dump(config, once, source))
        b = canonical(config, dump(config, resumed, source))
        assert_same_store(a, b)


def _as_sent(line: bytes) -> bytes:
    """A valid record as a producer writes it (string ids, epoch seconds, no BOM), so that
    batches of simple events are read at once; a malformed one as it is."""
    try:
        return encode_event(EventParser(commands=True).parse_json(line.strip()))
    except InvalidEvent:
        return line


@FEW
@given(config=configs(), lines=streams(), sizes=SIZES)
def test_batches_read_as_columns_store_what_batches_read_line_by_line_store(
    config: PipelineConfig, lines: list[bytes], sizes: list[int]
) -> None:
    """A batch of simple events (logins and visitors' events among them) is read at once into
    columns and stepped from them; read line by line into events instead, it stores the same,
    dead letters included. The valid records are written as a producer writes them (the
    messy forms are read line by line in any case)."""
    lines = [_as_sent(line) for line in lines]
    read_at_once = []

    json_columns = jsonbatch.json_columns

    def counted(texts: list[bytes]) -> Any:
        cols = json_columns(texts)
        read_at_once.append(cols is not None and not cols.plain)
        return cols

    with place("sqlite") as (tmp, columns), place("sqlite") as (_, events):
        source = write(tmp, lines)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(jsonbatch, "json_columns", counted)
            run(config, source, columns, sizes)
        event(f"batches of visitors' events read at once: {any(read_at_once)}")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(jsonbatch, "json_columns", lambda texts: None)
            run(config, source, events, sizes)
        a = canonical(config, dump(config, columns, source))
        b = canonical(config, dump(config, events, source))
        assert_same_store(a, b)


def _one_and_single_batches(lines: list[bytes], **run_config: Any) -> None:
    config = PipelineConfig(tasks=[], run=RunConfig(**run_config))
    for size in range(1, len(lines)):
        check_batch_boundaries(config, lines, [size])


def test_a_login_after_an_erasure_of_its_visitor_id_in_the_same_batch_is_taken() -> None:
    """Found by the batch-boundary property: the screen counted a ``$forget`` of an id as an
    event of a known user, so a login with that id as its visitor later in the same batch was
    refused, and taken when a batch ended between them. The same after a known user's erasure
    (the id is nobody's now) and after a ``$merge`` folded the id into another user."""
    rows: list[dict[str, Any]] = [
        {"user_id": "u0", "type": "view"},
        {"user_id": "v1", "type": "$forget"},
        {"user_id": "u0", "anonymous_id": "v1", "type": "purchase", "value": 5.0},
        {"user_id": "u2", "type": "view"},
        {"user_id": "u2", "type": "$forget"},
        {"user_id": "u0", "anonymous_id": "u2", "type": "view"},
        {"anonymous_id": "v3", "type": "view"},
        {"user_id": "u4", "anonymous_id": "v3", "type": "$merge"},
        {"user_id": "u0", "anonymous_id": "v3", "type": "view"},
    ]
    lines = [
        msgspec.json.encode({"event_id": f"e{k}", "ts": T0 + k, **row})
        for k, row in enumerate(rows)
    ]
    _one_and_single_batches(lines)
    with place("sqlite") as (tmp, url):
        source = write(tmp, lines)
        run(PipelineConfig(tasks=[]), source, url, [100])
        assert dump(PipelineConfig(tasks=[]), url, source)["dead"] == []


def test_a_profile_made_by_following_a_merge_in_the_same_batch_joins_the_population() -> None:
    """Found by the batch-boundary property: a ``$merge`` of two ids with no profile links them;
    an event of the merged id later in the batch makes the profile of the user it was merged
    into, which the compiled step left out of the RFM population (it counted the users of the
    kernel's events, not those of the commands between them)."""
    lines = [
        msgspec.json.encode(e)
        for e in [
            {"event_id": "m", "user_id": "u0", "anonymous_id": "u3", "type": "$merge", "ts": T0},
            {"event_id": "c", "user_id": "u3", "type": "cart", "ts": T0 + 60, "item_id": "i2"},
        ]
    ]
    _one_and_single_batches(lines)
    config = PipelineConfig(tasks=[])
    with place("sqlite") as (tmp, url):
        source = write(tmp, lines)
        run(config, source, url, [100])
        population = msgspec.msgpack.decode(dump(config, url, source)["meta"][POPULATION])
        assert sum(population["last_day"].values()) == 1


# -- replays ------------------------------------------------------------------------------------


@FEW
@given(config=configs(per_batch=False), lines=streams(), size=st.integers(1, 25))
def test_sending_the_stream_again_changes_nothing_but_the_counters(
    config: PipelineConfig, lines: list[bytes], size: int
) -> None:
    """Replaying events already applied (same ``event_id``, within the de-duplication window)
    changes nothing: every row and blob is as after the first copy, the second copy counts as
    duplicates (the screen does not judge a re-sent event again: a login whose visitor id has
    become a known user's since is a duplicate too) and its invalid records are dead letters
    again."""
    config = msgspec.structs.replace(
        config,
        run=msgspec.structs.replace(config.run, dedup_window=100_000),
        events=EventsConfig(),  # a bound on lateness would refuse the second copy
    )
    with place("sqlite") as (tmp, once), place("sqlite") as (tmp2, twice):
        first = write(tmp, lines)
        second = write(tmp2, [*lines, *(x.removeprefix(b"\xef\xbb\xbf") for x in lines)])
        run(config, first, once, [size])
        run(config, second, twice, [size])
        a = batch_independent(config, dump(config, once, first))
        b = batch_independent(config, dump(config, twice, second))
        assert a["rows"] == b["rows"]
        count_a, count_b = a["meta"].pop("counts"), b["meta"].pop("counts")
        assert a["meta"] == b["meta"]
        assert a["pending"] == b["pending"]
        _, watermark, events, duplicates, dead, links = count_a
        assert count_b[1:3] == (watermark, events) and count_b[5] == links
        assert count_b[3] == 2 * duplicates + events and count_b[4] == 2 * dead
        again = sorted(_reason(d) for d in b["dead"])
        for reason in (_reason(d) for d in a["dead"] * 2):
            again.remove(reason)
        assert again == []


def _reason(dead: bytes) -> tuple[str, str]:
    d = msgspec.json.decode(dead)
    return d["reason"], d["raw"].removeprefix("\ufeff")


# -- erasure ------------------------------------------------------------------------------------


@FEW
@given(config=configs(), ops=st.lists(op(), min_size=1, max_size=40), who=st.sampled_from(IDS))
def test_nothing_is_kept_under_an_erased_id(
    config: PipelineConfig, ops: list[Any], who: str
) -> None:
    """After a ``$forget`` of an id (a user's or a visitor's) that sends nothing more, no
    profile, identity link of it or leading to it, segment membership or profile's list of
    aliases holds it (see ``test_erasure_links``: links made without an alias entry, or beyond
    the alias list's cap, were left)."""
    lines = stream(ops)
    lines.append(_forget(who, max([T0, *(t for x in lines if (t := _ts(x)) is not None)])))
    with place("sqlite") as (tmp, url):
        source = write(tmp, lines)
        run(config, source, url, [7])
        state = dump(config, url, source)
        rows = state["rows"]
        assert who not in rows[PROFILES]
        assert who not in rows[ALIASES]
        assert who not in {user.decode() for user in rows[ALIASES].values()}
        for name in config.segments:
            assert who not in rows[segment_namespace(name)], name
        for user, blob in rows[PROFILES].items():
            assert who not in decode_profile(blob).aliases, user


@FEW
@given(
    config=configs(), ops=st.lists(op(), min_size=1, max_size=40), ttl=st.sampled_from(["", "1d"])
)
def test_no_link_leads_to_a_gone_id(config: PipelineConfig, ops: list[Any], ttl: str) -> None:
    """Links go one step and lead to a live id: a ``$merge`` re-points the links that led to
    the id merged away, expiry removes every link to the expired user (not only its alias
    list's), a linked id has no profile of its own. With a TTL, an event a year after the
    stream expires every profile, and no link is left but those to ids that a ``$merge``
    linked to without a profile (a command alone makes no profile)."""
    config = msgspec.structs.replace(
        config, run=msgspec.structs.replace(config.run, profile_ttl=ttl)
    )
    lines = stream(ops)
    end = max([T0, *(t for x in lines if (t := _ts(x)) is not None)])
    if ttl:
        lines.append(msgspec.json.encode(
            {"event_id": "later", "user_id": "zz", "type": "view", "ts": end + 365 * DAY}
        ))  # fmt: skip
    with place("sqlite") as (tmp, url):
        source = write(tmp, lines)
        run(config, source, url, [7])
        rows = dump(config, url, source)["rows"]
    links = {anon: user.decode() for anon, user in rows[ALIASES].items()}
    for anon, user in links.items():
        assert user not in links, f"{anon} -> {user} -> {links[user]}: links go one step"
        assert anon not in rows[PROFILES], f"{anon} is linked and has a profile"
    if ttl:
        assert sorted(rows[PROFILES]) == ["zz"]
        merged_into = {_user_of_merge(x) for x in lines} - {None}
        assert set(links.values()) <= merged_into, links


def _user_of_merge(line: bytes) -> str | None:
    try:
        e = msgspec.json.decode(line.removeprefix(b"\xef\xbb\xbf"))
    except msgspec.DecodeError:
        return None
    if isinstance(e, dict) and e.get("type") == "$merge":
        return str(e.get("user_id"))
    return None


def _forget(who: str, ts: float) -> bytes:
    return msgspec.json.encode({"event_id": "erase", "user_id": who, "type": "$forget", "ts": ts})


def _ts(line: bytes) -> float | None:
    """The time of a line in epoch seconds, if it is a number below 2033."""
    try:
        e = msgspec.json.decode(line.removeprefix(b"\xef\xbb\xbf"))
    except msgspec.DecodeError:
        return None
    ok = isinstance(e, dict) and isinstance(e.get("ts"), float) and e["ts"] < 2e9
    return e["ts"] if ok else None


# -- arrival order ------------------------------------------------------------------------------


@FEW
@given(
    ops=st.lists(op(), min_size=1, max_size=40),
    seed=st.integers(0, 1000),
    size=st.integers(1, 25),
    tasks=st.lists(st.sampled_from(sorted(ALL_TASKS)), unique=True, max_size=2),
    velocity=st.booleans(),
)
def test_interleaving_users_changes_no_profile(
    ops: list[Any], seed: int, size: int, tasks: list[str], velocity: bool
) -> None:
    """Each user's events, with those of every id linked to it (logins, merges), keep their
    order, while users' streams interleave another way, as partitions of a topic keyed by user
    do. The profiles, identity links, item statistics, segments whose rules do not change with
    time alone and the counters are the same, up to rounding, as
    ``test_state_properties.test_order_within_allowed_lateness_changes_no_profile`` states for
    shuffled events, here with identity links, merges, erasures, duplicates, clashing ids and
    invalid records; not what is learned (models, scores, outcomes, anomaly scores), and without
    a profile TTL or a lateness bound (both judged against the watermark, which moves with the
    interleaving)."""
    lines = [x.removeprefix(b"\xef\xbb\xbf") for x in stream(ops)]
    rnd = random.Random(seed)
    groups = _linked_groups(lines)
    queues = [[x for x, g in zip(lines, groups, strict=True) if g == k] for k in set(groups)]
    mixed: list[bytes] = []
    while queues:
        queue = rnd.choice(queues)
        mixed.append(queue.pop(0))
        queues = [q for q in queues if q]
    config = PipelineConfig(
        tasks=[ALL_TASKS[t] for t in tasks],
        segments={s: SEGMENTS[s] for s in TIMELESS},
        traits={"buyer": "frequency > 1"},
        features=FeatureConfig(bits=10),
        risk=RiskConfig(velocity=velocity, events_window="1h", items_window="2h", cap=4),
    )
    with place("sqlite") as (tmp, in_order), place("sqlite") as (tmp2, interleaved):
        first, second = write(tmp, lines), write(tmp2, mixed)
        run(config, first, in_order, [size])
        run(config, second, interleaved, [size])
        a, b = dump(config, in_order, first), dump(config, interleaved, second)
        assert sorted(a["rows"][ALIASES].items()) == sorted(b["rows"][ALIASES].items())
        for name in TIMELESS:
            ns = segment_namespace(name)
            assert sorted(a["rows"][ns]) == sorted(b["rows"][ns]), name
        ca, cb = (decode_checkpoint(x["meta"][CHECKPOINT]) for x in (a, b))
        counts = ("watermark", "events", "duplicates", "dead_letters", "links")
        assert [getattr(ca, f) for f in counts] == [getattr(cb, f) for f in counts]
        assert sorted(a["rows"][ITEMS]) == sorted(b["rows"][ITEMS])
        for key, blob in a["rows"][ITEMS].items():
            x, y = decode_item(blob), decode_item(b["rows"][ITEMS][key])
            scale = 2.0 ** ((x.anchor - y.anchor) / config.profile.counters_half_life_s)
            assert math.isclose(x.popularity * scale, y.popularity, rel_tol=1e-9), key
            assert (x.last_ts, x.n, x.value_n, x.category) == (
                y.last_ts,
                y.n,
                y.value_n,
                y.category,
            )
        sa, sb = open_store(in_order), open_store(interleaved)
        try:
            users = sorted(a["rows"][PROFILES])
            assert users == sorted(b["rows"][PROFILES])
            for user in users:
                x, y = profile_view(sa, user), profile_view(sb, user)
                assert_close(_orderless(x), _orderless(y), user)
        finally:
            sa.close(), sb.close()


def _linked_groups(lines: list[bytes]) -> list[int]:
    """For each line, a number shared by the lines whose ids are linked (the same user, or
    joined by a login or a merge); invalid lines are a group of their own each."""
    parent: dict[str, str] = {}

    def root(i: str) -> str:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    ids: list[list[str]] = []
    for line in lines:
        try:
            e = msgspec.json.decode(line)
        except msgspec.DecodeError:
            e = None
        found = (
            [str(e[k]) for k in ("user_id", "anonymous_id") if k in e]
            if isinstance(e, dict)
            else []
        )
        for other in found[1:]:
            parent[root(other)] = root(found[0])
        ids.append(found)
    names = [root(found[0]) if found else f"#{k}" for k, found in enumerate(ids)]
    index = {n: k for k, n in enumerate(dict.fromkeys(names))}
    return [index[n] for n in names]


def test_a_login_with_the_id_of_a_user_idle_past_the_ttl_is_taken_in_any_batch() -> None:
    """Found by the batch-boundary property: a known user idle past ``run.profile_ttl`` expires
    when a login names its id as the visitor's (the step judges the idle time exactly), but the
    screen refused that login as a takeover of a known user unless a batch had ended after the
    profile's expiry."""
    rows: list[dict[str, Any]] = [
        {"user_id": "u1", "type": "view", "ts": T0},
        {"user_id": "u2", "type": "view", "ts": T0 + 3 * DAY},
        {"user_id": "u0", "anonymous_id": "u1", "type": "view", "ts": T0 + 3 * DAY + 60},
        {"user_id": "u3", "type": "view", "ts": T0 + 3 * DAY + 90},
        {"user_id": "u2", "anonymous_id": "u3", "type": "view", "ts": T0 + 3 * DAY + 120},
    ]
    lines = [msgspec.json.encode({"event_id": f"e{k}", **row}) for k, row in enumerate(rows)]
    _one_and_single_batches(lines, profile_ttl="1d")
    config = PipelineConfig(tasks=[], run=RunConfig(profile_ttl="1d"))
    with place("sqlite") as (tmp, url):
        source = write(tmp, lines)
        run(config, source, url, [100])
        state = dump(config, url, source)
        assert [msgspec.json.decode(d["raw"])["event_id"] for d in state["dead"]] == ["e4"]
        assert state["rows"][ALIASES] == {"u1": b"u0"}

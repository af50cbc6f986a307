"""Random pipeline configs and tangled event streams for the compiled engine's properties.

A stream is drawn as a list of small operations over a handful of users (``u0``..``u3``),
visitors (``v0``..``v3``) and items, so that identity links, operator merges, erasures, expiry,
duplicates and late events keep running into each other: a visitor logs in as one user and then
as another, a user is merged into a visitor's user, an erased user comes back, a re-sent event
id carries other content. Valid records come in their messy forms too (ISO 8601 times, numeric
ids, numbers as ``"ts"`` strings, a UTF-8 byte order mark, CRLF line ends), and malformed ones
are mixed in. Hypothesis shrinks a failing stream operation by operation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from hypothesis import strategies as st
from test_state_properties import SEGMENTS, TASKS, TIMELESS

from liveprofile.config import (
    EventsConfig,
    FeatureConfig,
    LabelConfig,
    PipelineConfig,
    ProfileConfig,
    RiskConfig,
    RunConfig,
    TaskConfig,
)

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
HOUR, DAY = 3600.0, 86400.0
LATENESS = 12 * HOUR
IDS = [f"u{k}" for k in range(4)] + [f"v{k}" for k in range(4)]
TYPES = ("view", "view", "click", "cart", "purchase", "rate")
#: what an operation does; "late" is behind the allowed lateness, the others within it
KINDS = (*TYPES, "login", "login", "merge", "forget", "dup", "clash", "bad", "late")
#: malformed records: each must land in the dead letters, whatever the batches
BAD = [
    b"{not json",
    b"[]",
    b"\xff\xfe",
    b'{"event_id": "b1", "type": "view"}',
    b'{"user_id": "u0", "ts": 1704067200}',
    b'{"event_id": "b2", "user_id": "u0", "type": "view", "ts": "yesterday"}',
    b'{"event_id": "b3", "user_id": "u0", "type": "view", "ts": 1704067200000}',
    b'{"event_id": "b4", "user_id": "u0", "type": "view\\n", "ts": 1704067200}',
    b'{"event_id": "b5", "user_id": "u\\u0001", "type": "view", "ts": 1704067200}',
    b'{"event_id": "b6", "user_id": "u0", "type": "view", "ts": 1704067200, "value": "x"}',
    b'{"event_id": "b7", "user_id": "u0", "type": "view", "ts": 1704067200, "tags": "a"}',
    b'{"event_id": "b8", "user_id": "u0", "type": "purchase", "ts": 1704067200, "value": 1e12}',
    b'{"event_id": "b9", "user_id": "u0", "type": "view", "ts": 4102444800}',
    b'{"event_id": "b10", "type": "$forget", "ts": 1704067200}',
    b'{"event_id": "b11", "user_id": "u0", "type": "", "ts": 1704067200}',
    b'{"event_id": "b12", "user_id": "u0", "type": "view", "ts": 1704067200, "n": '
    + b"[" * 20
    + b"]" * 20
    + b"}",
    b'{"event_id": "b13", "user_id": "u0", "type": "view", "ts": 1704067200, "p": "'
    + b"x" * 70_000
    + b'"}',
]


def op() -> st.SearchStrategy[tuple[str, int, int, int, float, float, int]]:
    """(kind, who, other, item, time step, lag, form) of one operation."""
    return st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, len(IDS) - 1),
        st.integers(0, len(IDS) - 1),
        st.integers(0, 5),
        st.sampled_from([0.0, 1.0, 40.0, 1800.0, 7200.0, 30_000.0]),
        st.sampled_from([0.0, 0.0, 0.0, 600.0, 3 * HOUR, LATENESS - 60.0]),
        st.integers(0, 5),
    )


def stream(ops: list[tuple[str, int, int, int, float, float, int]]) -> list[bytes]:
    """The JSON lines of ``ops`` (see the module's docstring)."""
    lines: list[bytes] = []
    clock = T0
    for n, (kind, who, other, item, step, lag, form) in enumerate(ops):
        clock += step
        ts = clock - lag
        user, peer = IDS[who], IDS[other]
        if kind == "bad":
            lines.append(BAD[(who * 6 + other + item + form) % len(BAD)])
            continue
        if kind in ("dup", "clash"):
            earlier = [x for x in lines if x.startswith(b'{"event_id":"e')]
            if not earlier:
                continue
            line = earlier[(who * 7 + item) % len(earlier)]
            if kind == "clash":  # the same id with other content: the first one counts
                e = msgspec.json.decode(line)
                e.update(type="cart", item_id=f"i{item}")
                line = _encode(e)
            lines.append(line)
            continue
        e: dict[str, Any] = {"event_id": f"e{n}", "user_id": user, "type": "view", "ts": ts}
        if kind == "late":
            e["ts"] = clock - 2 * DAY
        if kind in TYPES or kind in ("late", "login"):
            e["type"] = kind if kind in TYPES else ("purchase" if form < 3 else "view")
            e.update(item_id=f"i{item}", category=f"c{item % 3}")
            if form == 1:
                e["tags"] = ["sale", f"t{item % 2}"]
            if e["type"] == "purchase":
                e["value"] = 5 + item * 3.5
            elif e["type"] == "rate":
                e["value"] = 1 + (who + item) % 5
            if kind == "login":
                # a visitor's id, or a user's (refused while it is a known user's)
                e["user_id"], e["anonymous_id"] = f"u{who % 4}", peer
            elif user.startswith("v"):
                del e["user_id"]
                e["anonymous_id"] = user
        elif kind == "merge":
            e.update(type="$merge", anonymous_id=peer)
        elif kind == "forget":
            e["type"] = "$forget"
        lines.append(_messy(e, form))
    if lines and ops[0][6] == 5:  # a byte order mark opens the file
        lines[0] = b"\xef\xbb\xbf" + lines[0]
    return lines


def _messy(e: dict[str, Any], form: int) -> bytes:
    """One of the forms a valid record may take."""
    if form == 2:  # ISO 8601 time
        e["ts"] = datetime.fromtimestamp(e["ts"], UTC).isoformat().replace("+00:00", "Z")
    elif form == 3:  # a number in a string, and a numeric item id
        e["ts"] = repr(float(e["ts"]))
        if "item_id" in e:
            e["item_id"] = int(e["item_id"][1:]) + 100
    elif form == 4 and "props" not in e:
        e["props"] = {"page": "home", "n": 3}
    line = _encode(e)
    return line + b"\r" if form == 5 else line


def _encode(e: dict[str, Any]) -> bytes:
    # "event_id" first: duplicates are picked among earlier lines by that prefix
    return msgspec.json.encode({"event_id": e["event_id"], **e})


@st.composite
def streams(draw: st.DrawFn, max_ops: int = 40) -> list[bytes]:
    """A tangled stream (see the module's docstring)."""
    return stream(draw(st.lists(op(), min_size=1, max_size=max_ops)))


#: a user-keyed task beside the item- and category-keyed ones, with few open examples per key
CAPPED = TaskConfig(
    "capped",
    on=["view", "click"],
    label=LabelConfig(kind="delayed", conversion=["cart"], key="user", window="3h", open_per_key=2),
)
ALL_TASKS = {**TASKS, "capped": CAPPED}


@st.composite
def configs(draw: st.DrawFn, per_batch: bool = True) -> PipelineConfig:
    """A compiled-engine pipeline; without ``per_batch``, no segment whose rule changes with
    time alone (those are evaluated as of each batch's watermark, by design)."""
    tasks = draw(st.lists(st.sampled_from(sorted(ALL_TASKS)), unique=True, max_size=3))
    names = sorted(SEGMENTS) if per_batch else TIMELESS
    segments = draw(st.lists(st.sampled_from(names), unique=True, max_size=2))
    return PipelineConfig(
        tasks=[ALL_TASKS[t] for t in tasks],
        segments={s: SEGMENTS[s] for s in segments},
        traits=draw(st.sampled_from([{}, {"buyer": "frequency > 1"}])),
        profile=ProfileConfig(
            top_k=draw(st.sampled_from([2, 16])),
            outcome_keys=draw(st.sampled_from([1, 8])),
            behaviour_keys=draw(st.sampled_from([0, 2, 32])),
            behaviour_value=draw(st.booleans()),
            track=draw(st.sampled_from([[], ["c0", "sale"]])),
        ),
        features=FeatureConfig(
            bits=10,
            crosses=draw(st.booleans()),
            behaviour=draw(st.booleans()),
            time_of_day=draw(st.booleans()),
        ),
        run=RunConfig(
            dedup_window=draw(st.sampled_from([4, 100_000])),
            profile_ttl=draw(st.sampled_from(["", "", "1d", "6h"])),
            hot_profiles=draw(st.sampled_from([1, 10_000])),
            resting_profiles=draw(st.sampled_from([0, 0, 2])),
            metrics_window=draw(st.sampled_from(["7d", "2h"])),
            segment_sweep="6h",
        ),
        risk=RiskConfig(
            velocity=draw(st.booleans()),
            anomaly=draw(st.integers(0, 5)) == 0,  # the detector is slow: one example in six
            events_window="1h",
            items_window="2h",
            cap=4,
        ),
        events=EventsConfig(allowed_lateness=draw(st.sampled_from(["", "12h"]))),
    )

"""One partition's state and its apply path, shared by the Kafka workers and the Flink job.

:func:`load_partition` loads a partition's state from the store (scope ``{topic}.{p}``, see
:func:`partition_scope`), :func:`apply_records` applies and commits one batch of its records,
fenced, with its dead letters and next offset (key :func:`source_name` in the checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import lt
from typing import Any, cast

import msgspec

from liveprofile.config import PipelineConfig
from liveprofile.engine.core import Core
from liveprofile.engine.local import RunStats, apply_batch
from liveprofile.engine.screen import screen
from liveprofile.engine.state import PipelineState
from liveprofile.errors import InvalidEvent
from liveprofile.events.columns import EventColumns
from liveprofile.events.deadletter import DeadLetter
from liveprofile.events.jsonbatch import json_columns
from liveprofile.events.schema import COMMANDS, Event, EventParser
from liveprofile.events.sources import Batch
from liveprofile.kafka.shared_model import share_models
from liveprofile.redis.fence import FencedOut, FencedRedisStore
from liveprofile.store.scoped import ScopedStore

#: the store namespace of a Kafka topic's dead letters, keyed ``{topic}:{partition}:{offset}``
DEAD_LETTER_NAMESPACE = "deadletter"


def partition_scope(topic: str, partition: int) -> str:
    """The store scope of one partition's state.

    >>> partition_scope("shop", 3)
    'shop.3'
    """
    return f"{topic}.{partition}"


def source_name(topic: str, partition: int) -> str:
    """The key of a partition's next offset in the checkpoint's ``offsets``.

    >>> source_name("shop", 3)
    'kafka:shop:3'
    """
    return f"kafka:{topic}:{partition}"


@dataclass
class OwnedPartition:
    """A partition a runner owns: its state and its view of the store."""

    partition: int
    view: ScopedStore
    state: PipelineState
    core: Core


def positions(topic: str, owned: Mapping[int, OwnedPartition]) -> dict[int, tuple[float, int]]:
    """Each of the ``owned`` partitions' (watermark, next offset in the store; -1: none yet),
    as :class:`~liveprofile.kafka.align.SkewGate` reads its own partitions."""
    return {
        p: (o.state.watermark, o.state.checkpoint.offsets.get(source_name(topic, p), -1))
        for p, o in owned.items()
    }


def load_partition(
    store: FencedRedisStore,
    config: PipelineConfig,
    topic: str,
    partition: int,
    models: dict[str, Any] | None = None,
) -> tuple[OwnedPartition, int]:
    """A partition's state as the store has it, and the next offset to read (-1: none yet).

    With ``run.shared_model`` the partition's learners are the store's shared models
    (:mod:`liveprofile.kafka.shared_model`; ``models``: the in-memory copies a worker shares
    between its partitions). Raises :class:`FencedOut` when the partition's fence and
    checkpoint disagree.
    """
    view = ScopedStore(store, partition_scope(topic, partition))
    state = PipelineState.load(view, config)
    if config.run.shared_model:
        share_models(store, view, state, models)
    stored = store.fence_value(view.scope)
    if stored != state.checkpoint.seq:
        raise FencedOut(
            f"fence of {view.scope} is at {stored}, its checkpoint at {state.checkpoint.seq}"
        )
    owned = OwnedPartition(partition, view, state, Core(config))
    return owned, state.checkpoint.offsets.get(source_name(topic, partition), -1)


def as_columns(events: list[Event]) -> Sequence[Event]:
    """``events`` as :class:`EventColumns` when none has properties or is a command, so the
    compiled step reads its columns (and, when no event names an anonymous id, has no identity
    links or lifecycle stops to look for); else ``events`` as they are.

    >>> plain = [Event("e1", "u1", "view", 1.0), Event("e2", "u2", "buy", 2.0, value=3.0)]
    >>> type(as_columns(plain)).__name__, as_columns(plain).user, as_columns(plain).plain
    ('EventColumns', ['u1', 'u2'], True)
    >>> as_columns([*plain, Event("e3", "a1", "view", 3.0, anonymous_id="a1")]).anon
    [None, None, 'a1']
    >>> type(as_columns([*plain, Event("e4", "u1", "view", 4.0, props={"k": 1})])).__name__
    'list'
    """
    if not events:
        return events
    for e in events:
        if e.props is not None or e.type in COMMANDS:
            return events
    return EventColumns.of(events)


def apply_records(
    store: FencedRedisStore,
    topic: str,
    owned: OwnedPartition,
    records: Iterable[tuple[int, bytes | None]],
    stats: RunStats,
    parser: EventParser,
    send_dead_letters: Callable[[dict[str, bytes | None]], None] | None = None,
    started: Callable[[float], None] | None = None,
    now: Callable[[], float] = time.time,
) -> Batch | None:
    """Apply one partition's ``(offset, value)`` records, in offset order, and commit them.

    The one apply path of the Kafka runners: records below the partition's offset in the store
    are skipped (applied already), invalid ones become dead letters (kept in the store under
    ``{topic}:{partition}:{offset}`` and handed to ``send_dead_letters`` just before the
    commit); the events that parse are then screened against the partition's state as every
    runner screens them (:func:`liveprofile.engine.screen.screen`: event time too far ahead
    of the later of the watermark and ``now()``, a value out of bounds, ...), and those that
    fail are dead letters too, with their reason, kept and sent the same way: the core never
    sees them, so they move no watermark (the partition's, and the one ``started`` announces).
    The batch commits in one fenced transaction; with ``store.overlap`` that transaction is
    sent in the background and a failure is raised as :class:`~liveprofile.redis.fence.
    CommitFailed` at the store's next use (see :mod:`liveprofile.redis.fence`). Returns the
    committed batch (None: nothing new). Raises :class:`FencedOut` when another owner
    committed the partition first; on that or any other error the caller must drop ``owned``
    (its state ran ahead of the store).
    ``started`` is told the latest event time of the batch's screened events before they are
    applied (event-time alignment across workers, :mod:`liveprofile.kafka.align`); ``now`` is
    the runner's clock in epoch seconds.
    """
    state, p = owned.state, owned.partition
    name = source_name(topic, p)
    start = state.checkpoint.offsets.get(name, -1)
    offsets, values = _new_records(records, start)
    if not offsets:
        return None
    last = offsets[-1]
    dead_rows: dict[str, bytes | None] = {}
    columns = json_columns(values)  # the common batch: all simple events, read at once
    if columns is not None:
        batch = Batch(events=columns, offset=last + 1, positions=offsets)
    else:
        batch = _parse(parser, topic, p, offsets, values, dead_rows)
        batch.offset = last + 1
    _screen(owned, topic, batch, now(), dead_rows)
    if started is not None and batch.events:
        started(_latest(batch.events))
    if dead_rows and send_dead_letters is not None:
        send_dead_letters(dead_rows)
    extra = {DEAD_LETTER_NAMESPACE: dead_rows} if dead_rows else None
    with store.fenced_by(owned.view.scope, state.checkpoint.seq):
        apply_batch(owned.core, state, owned.view, name, batch, stats, extra)
    return batch


def _new_records(
    records: Iterable[tuple[int, bytes | None]], start: int
) -> tuple[list[int], list[bytes]]:
    """The offsets and values (b"" for none) of ``records`` from offset ``start`` on, each
    offset once: a record at or below one already taken was applied already (a replay or a
    seek race).

    >>> _new_records([(5, b"a"), (6, None), (7, b"c")], 0)
    ([5, 6, 7], [b'a', b'', b'c'])
    >>> _new_records([(3, b"x"), (4, b"y"), (4, b"y"), (2, b"z"), (6, b"w")], 4)
    ([4, 6], [b'y', b'w'])
    >>> _new_records([(8, b"a"), (9, b"b")], 9), _new_records([], 0)
    (([9], [b'b']), ([], []))
    """
    pairs = list(records)
    if not pairs:
        return [], []
    offsets, values = (list(column) for column in zip(*pairs, strict=True))
    if offsets[0] >= start and all(map(lt, offsets, offsets[1:])) and None not in values:
        return offsets, cast(list[bytes], values)  # the usual poll: new, in order, with values
    kept: list[int] = []
    kept_values: list[bytes] = []
    last = start - 1
    for offset, value in pairs:
        if offset > last:
            last = offset
            kept.append(offset)
            kept_values.append(value or b"")
    return kept, kept_values


def _parse(
    parser: EventParser,
    topic: str,
    p: int,
    offsets: list[int],
    values: list[bytes],
    dead_rows: dict[str, bytes | None],
) -> Batch:
    """Parse records one by one: those that do not parse become dead letters (also added to
    ``dead_rows``, keyed ``{topic}:{partition}:{offset}``)."""
    events: list[Event] = []
    positions: list[int] = []  # each event's offset, as its dead letter records it
    batch = Batch(events=events, dead_letters=[], positions=positions)
    name = source_name(topic, p)
    parse = parser.parse_json
    for offset, raw in zip(offsets, values, strict=True):
        try:
            events.append(parse(raw))
            positions.append(offset)
        except InvalidEvent as exc:
            letter = DeadLetter(raw.decode("utf-8", "replace"), str(exc), name, offset)
            batch.dead_letters.append(letter)
            dead_rows[f"{topic}:{p}:{offset}"] = msgspec.json.encode(letter)
    return batch


def _screen(
    owned: OwnedPartition, topic: str, batch: Batch, now: float, dead_rows: dict[str, bytes | None]
) -> None:
    """Screen the parsed events of ``batch``, as columns when they have no properties and no
    command (when none names an anonymous id either, checked at once, on arrays), and add those
    that fail to ``dead_rows``, keyed as a record that does not parse
    (``{topic}:{partition}:{offset}``)."""
    if not isinstance(batch.events, EventColumns):
        batch.events = as_columns(cast(list[Event], batch.events))
    before = len(batch.dead_letters)
    screen(owned.core, owned.state, owned.view, source_name(topic, owned.partition), batch, now)
    screened = batch.dead_letters[before:]
    if not screened:
        return
    for letter in screened:
        dead_rows[f"{topic}:{owned.partition}:{letter.offset}"] = msgspec.json.encode(letter)
    batch.events = as_columns(list(batch.events))


def _latest(events: Sequence[Event]) -> float:
    """The latest event time of ``events``.

    >>> _latest(EventColumns.of([Event("e1", "u1", "view", 5.0), Event("e2", "u1", "view", 2.0)]))
    5.0
    """
    if isinstance(events, EventColumns):
        return float(events.ts.max())
    return max(e.ts for e in events)

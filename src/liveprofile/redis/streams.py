"""Events on Redis Streams: partitioned by user, read through a consumer group.

Each partition is one stream, ``{prefix}:events:{p}``, whose entries hold one raw JSON event in
the field ``e``. A user always lands in the same partition (:func:`partition_of`), so the events
of one user stay in order and one worker owns the whole state of that user.

Stream entry ids (``"<ms>-<seq>"``) become increasing integer offsets (:func:`entry_offset`); the
worker commits the offset of the last applied entry with its state, so an entry at or below the
committed offset is known to be applied already and is only acknowledged again.

>>> partition_of("u1", 4), stream_key("shop", 2)
(2, 'shop:events:2')
>>> entry_offset(b"1700000000000-5") == 1_700_000_000_000 * 2**22 + 5
True
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import redis

from liveprofile.errors import InvalidEvent, SourceError
from liveprofile.events.deadletter import DeadLetter
from liveprofile.events.schema import Event, EventParser, check_depth

#: sequence numbers within one millisecond must stay below this for offsets to be increasing
SEQ_BITS = 22
#: field of a stream entry that holds the raw JSON event
FIELD = b"e"
#: batches in a row that would skip entries before a reader gives up (:meth:`StreamReader.skips`)
MAX_SKIPS = 5
#: field of an entry that holds an operator's command (``$forget``), written by
#: ``liveprofile privacy delete``; whoever can write to the Redis server can write it, so
#: Redis access is the boundary (``publish`` never writes it, and ``e`` never carries commands)
COMMAND_FIELD = b"c"


#: trims a stream (KEYS[1]) of what every consumer group is done with, below ARGV[1] at most:
#: a group keeps its oldest pending entry (read, not acknowledged) and, with none pending, the
#: last entry delivered to it (so a group that has read nothing keeps everything); the entries
#: older than all of those and than ARGV[1] are deleted. Returns how many went.
TRIM_SCRIPT = """
local function older(a, b)
  local da, db = string.find(a, '-', 1, true), string.find(b, '-', 1, true)
  local ma, mb = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  return ma < mb or (ma == mb and tonumber(string.sub(a, da + 1)) < tonumber(string.sub(b, db + 1)))
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local minid = ARGV[1]
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local keep = info['last-delivered-id']
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  if pending[1] > 0 then keep = pending[2] end
  if older(keep, minid) then minid = keep end
end
return redis.call('XTRIM', KEYS[1], 'MINID', minid)
"""


def partition_of(user: str, partitions: int) -> int:
    """The partition of a user: CRC-32 of the UTF-8 user id, modulo ``partitions``.

    CRC-32 is stable across processes, machines and Python versions (unlike ``hash()``), so
    publishers and workers agree without coordination. Changing ``partitions`` moves users
    between partitions; do it only on empty streams.

    >>> partition_of("u1", 1)
    0
    """
    if partitions < 1:
        raise SourceError(f"partitions must be >= 1, got {partitions}")
    return zlib.crc32(user.encode("utf-8")) % partitions


def stream_key(prefix: str, partition: int) -> str:
    """The stream of one partition: ``{prefix}:events:{partition}``."""
    return f"{prefix}:events:{partition}"


def entry_offset(entry_id: bytes | str) -> int:
    """A stream entry id ``"ms-seq"`` as one increasing integer, ``ms * 2**22 + seq``.

    Redis ids increase by (ms, seq), so the integers increase with them as long as ``seq`` stays
    below 2**22 (4,194,304 entries added in the same millisecond, far beyond what one stream
    takes). The result fits a signed 64-bit integer for ``ms`` below 2**41 (year 2039) and an
    unsigned one below 2**42 (year 2109); Python and msgpack store either.

    >>> entry_offset("0-1") < entry_offset("0-2") < entry_offset("1-0")
    True
    """
    if isinstance(entry_id, bytes):
        ms, _, seq = entry_id.partition(b"-")
    else:
        ms, _, seq = entry_id.encode().partition(b"-")
    seq_i = int(seq or 0)
    if seq_i >= 2**SEQ_BITS:
        text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        raise SourceError(f"stream entry {text}: sequence {seq_i} is above 2**{SEQ_BITS}")
    return (int(ms) << SEQ_BITS) + seq_i


def format_offset(offset: int) -> str:
    """A committed integer offset as the stream entry id ``"ms-seq"`` it came from.

    >>> format_offset(entry_offset("1700000000000-5"))
    '1700000000000-5'
    """
    return f"{offset >> SEQ_BITS}-{offset & (2**SEQ_BITS - 1)}"


class _UserOnly(msgspec.Struct):
    """The two fields that choose a partition; everything else is validated by the worker."""

    user_id: str | int | None = None
    anonymous_id: str | int | None = None


@dataclass
class PublishStats:
    """What :func:`publish` wrote: entries per partition and lines that had no readable user."""

    published: int = 0
    unroutable: int = 0
    per_partition: dict[int, int] = field(default_factory=dict)


def publish(
    client: redis.Redis,
    prefix: str,
    partitions: int,
    raw_lines: Iterable[bytes],
    *,
    chunk: int = 1000,
    field: bytes = FIELD,
) -> PublishStats:
    """Append raw JSON lines to their partition streams, ``chunk`` entries per round trip.

    A line whose user cannot be read (broken JSON, no user) still goes to partition 0, where the
    worker dead-letters it with the reason: nothing is dropped. Blank lines are skipped.
    """
    decoder = msgspec.json.Decoder(_UserOnly)
    stats = PublishStats()
    pipe = client.pipeline(transaction=False)
    pending = 0
    for line in raw_lines:
        raw = line.strip()
        if not raw:
            continue
        try:
            check_depth(raw)  # the decoder below would recurse into deep nesting
            rec = decoder.decode(raw)
            user = rec.user_id if rec.user_id is not None else rec.anonymous_id
        except (msgspec.DecodeError, UnicodeDecodeError, InvalidEvent):
            user = None
        if user is None:
            p = 0
            stats.unroutable += 1
        else:
            p = partition_of(str(user), partitions)
        pipe.xadd(stream_key(prefix, p), {field: raw})
        stats.published += 1
        stats.per_partition[p] = stats.per_partition.get(p, 0) + 1
        pending += 1
        if pending >= chunk:
            pipe.execute()
            pending = 0
    if pending:
        pipe.execute()
    return stats


@dataclass
class StreamBatch:
    """Entries read from one stream: the ones to apply, their dead letters, and every id to ack."""

    stream: str
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: stream entry id (text) of each dead letter, the key it is stored under
    dead_letter_ids: list[str] = field(default_factory=list)
    #: every entry id read, applied or skipped; acknowledged after the commit
    ids: list[bytes] = field(default_factory=list)
    #: the offset of each event's own entry (``Batch.positions``)
    positions: list[int] = field(default_factory=list)
    #: offset of the last entry to apply (0 when every entry was applied before)
    offset: int = 0
    #: offset of the first entry to apply (0 when every entry was applied before)
    first: int = 0
    skipped: int = 0


class StreamReader:
    """Reads one partition stream through a consumer group, in the order a restart repeats.

    Each :meth:`read` returns, in this order of preference: this consumer's pending entries
    (delivered before, not yet acknowledged), entries claimed from consumers idle longer than
    ``claim_idle_ms``, then new entries (waiting up to ``block_ms``). Entries at or below
    ``committed`` are marked as skipped: they were applied by an earlier commit.
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        consumer: str,
        *,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self._parser = EventParser()
        self._operator = EventParser(commands=True)
        # the same connections, replies left as Redis sent them: [id, [field, value, ...]]
        # per entry, without redis-py building a dict per entry
        self._raw = redis.Redis(connection_pool=client.connection_pool)
        self._raw.set_response_callback("XREADGROUP", _as_sent)
        self._raw.set_response_callback("XAUTOCLAIM", _as_sent)
        self._pending_done = False
        self._skips = 0

    def ensure_group(self) -> None:
        """Create the stream and the consumer group (reading from the start) if missing."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def take_over(self) -> dict[str, int]:
        """Make every entry pending in the group this consumer's own; how many each other
        consumer had (none when this consumer is the stream's only reader).

        Called by the owner of the stream, holding its writer lease, before it reads: entries
        another consumer (this worker before a restart under another name, e.g. a new host)
        was delivered but never committed would otherwise wait ``claim_idle_ms`` while newer
        entries are applied, and then be skipped as applied already.
        """
        summary: Any = self.client.xpending(self.stream, self.group)
        others = {
            _text(c["name"]): int(c["pending"])
            for c in summary.get("consumers") or []
            if _text(c["name"]) != self.consumer
        }
        cursor = "0-0"
        while others:
            # the raw reply [next cursor, ids, deleted ids]: redis-py drops the cursor of JUSTID
            reply: Any = cast(Any, self._raw).execute_command(
                "XAUTOCLAIM",
                self.stream,
                self.group,
                self.consumer,
                0,
                cursor,
                "COUNT",
                1000,
                "JUSTID",
            )
            cursor = _text(reply[0])
            if cursor == "0-0":
                break
        return others

    def reset(self) -> None:
        """Read pending entries first again (after a failure or a reload of state)."""
        self._pending_done = False

    def read(self, count: int, committed: int, block_ms: int) -> StreamBatch | None:
        """Up to ``count`` entries, or None when nothing arrived within ``block_ms``."""
        if not self._pending_done:
            entries = self._read("0", count, None)
            if entries:
                return self._batch(entries, committed)
            self._pending_done = True
        claimed: Any = self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count, justid=True
        )
        if claimed:  # the ids claimed (redis-py returns only those with justid)
            # now in our pending list: read them (in id order) before anything new
            self._pending_done = False
            return self.read(count, committed, block_ms)
        entries = self._read(">", count, block_ms)
        return self._batch(entries, committed) if entries else None

    def ack(self, ids: list[bytes]) -> None:
        if ids:
            self.client.xack(self.stream, self.group, *ids)

    def skips(self, committed: int, first: int) -> bool:
        """Whether the stream holds entries after ``committed`` and before ``first``: a batch
        starting at ``first`` would skip them. They were delivered to another reader of the
        group (a second process under this consumer name, or a stalled one under another),
        and are read first once pending here (:meth:`take_over`). After :data:`MAX_SKIPS` in
        a row, they are pending nowhere: a :class:`SourceError` says so."""
        low = f"({format_offset(committed)}" if committed else "-"
        if not self.client.xrange(self.stream, low, f"({format_offset(first)}", count=1):
            self._skips = 0
            return False
        self._skips += 1
        if self._skips > MAX_SKIPS:
            raise SourceError(
                f"{self.stream}: entries after the committed one were acknowledged in group "
                f"{self.group} without being applied; another program reads the group: give "
                "the worker a group of its own (--group)"
            )
        return True

    def _read(self, start: str, count: int, block_ms: int | None) -> list[Any]:
        reply = self._raw.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        if not reply:
            return []
        # RESP2 gives [[stream, entries]], RESP3 {stream: entries}
        if isinstance(reply, dict):
            return cast(list[Any], next(iter(reply.values())))
        return cast(list[Any], cast(Any, reply)[0][1])

    def _batch(self, entries: list[Any], committed: int) -> StreamBatch:
        batch = StreamBatch(self.stream)
        batch.ids = [entry_id for entry_id, _ in entries]
        # entries come in id order: those at or below the committed offset come first
        start = 0
        while start < len(entries) and entry_offset(entries[start][0]) <= committed:
            start += 1
        batch.skipped = start
        if start < len(entries):
            batch.first = entry_offset(entries[start][0])
            batch.offset = entry_offset(entries[-1][0])
        parse, events = self._parser.parse_json, batch.events
        for entry_id, fields in entries[start:]:
            if type(fields) is list and len(fields) == 2 and fields[0] == FIELD:  # as published
                raw = fields[1]
            else:
                raw = _field(fields)
                command = _field(fields, COMMAND_FIELD) if raw is None else None
                if command is not None:
                    raw, parse = command, self._operator.parse_json
            try:
                if raw is None:
                    raise InvalidEvent(
                        "stream entry has no 'e' field (deleted or not written by publish)"
                    )
                events.append(parse(raw))
                batch.positions.append(entry_offset(entry_id))
                parse = self._parser.parse_json
            except InvalidEvent as exc:
                parse = self._parser.parse_json
                text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                shown = "" if raw is None else bytes(raw).decode("utf-8", "replace")
                offset = entry_offset(entry_id)
                batch.dead_letters.append(DeadLetter(shown, str(exc), self.stream, offset))
                batch.dead_letter_ids.append(text)
        return batch


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _as_sent(response: Any, **options: Any) -> Any:
    return response


def _field(fields: Any, name: bytes = FIELD) -> bytes | None:
    """The event of an entry's fields: a flat [name, value, ...] list (or a dict)."""
    if not fields:
        return None
    if isinstance(fields, dict):
        return fields.get(name)
    for k in range(0, len(fields) - 1, 2):
        if fields[k] == name:
            return fields[k + 1]  # type: ignore[no-any-return]
    return None

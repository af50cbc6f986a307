"""Reading the dead-letter and segment-change streams exactly once, across lost Redis writes.

A worker appends a batch's dead letters (``{prefix}:deadletters``) and segment changes
(``{prefix}:segment-changes``) in the batch's own commit. A Redis without durable writes
(``appendfsync everysec``) that crashes loses its last commits whole, stream entries included,
and the worker applies those batches again, appending the same entries once more under new
entry ids. The stream then holds each entry once, but a reader that read an entry before the
crash reads it again after it, and a consumer group, whose read position went back with the
server, delivers it again.

So each entry a commit appends carries the field ``key`` (:data:`KEY_FIELD`):
``SOURCE/ID/INDEX``, where SOURCE is the partition stream the batch came from, ID the entry
id of the event a dead letter is about (INDEX 0) or of the batch's last entry for its segment
changes (INDEX: the change's place in the batch). A batch applied again makes the same keys,
and the keys of one source only grow from one commit to the next, so a reader keeps the highest
position seen per source (:class:`Seen`, a few bytes per partition) and drops any entry at or
below it. The HTTP collector keys its dead letters too, under a source of its own per process
(:class:`liveprofile.redis.sink.RedisSink`). Entries without a key are always new.
:class:`Follower` reads a stream this way.

A dead letter's key names its own event entry, so it holds whatever the batches. Segment changes
are made per batch: the replayed batch is the lost one (the worker reads its pending entries
first, in the same order) unless the lost second also held the delivery of the batch's entries
and more entries had arrived since; then it ends later, and its changes come under keys further
on. So a segment change also carries the batch's first entry (:data:`FIRST_FIELD`): a batch
that starts at or before the end of a batch already read replays the batches read from there
on, and :class:`Follower` drops each of its changes that the reader already has from them (the
last change read of that user and segment in those batches is the same one; it remembers the
last :data:`REPLAY_WINDOW` batches with changes of each source). What the longer
batch no longer makes (a user who entered in the lost batch and left again before the replayed
one ended) is not taken back. Event entries lost with that second are never applied: a reader
may have read changes they made, and a replayed batch that so ends before the lost one has its
changes taken for read ones (publish with ``appendfsync always`` to rule that out).

>>> key = entry_key("shop:events:0", (1700000000000 << 22) + 5, 2)
>>> key
'shop:events:0/1700000000000-5/2'
>>> seen = Seen()
>>> [seen.fresh(k) for k in (key, key, entry_key("shop:events:1", 7), None, "other")]
[True, False, True, True, True]
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import msgspec
import redis

from liveprofile.errors import SourceError
from liveprofile.events.deadletter import DeadLetter
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import entry_offset, format_offset

#: field of a dead-letter or segment-change entry that names what made it (see above)
KEY_FIELD = "key"
#: field of a segment-change entry: the entry id of its batch's first event entry
FIRST_FIELD = "first"
#: batches of segment changes per source a :class:`Follower` remembers, to match a replay
REPLAY_WINDOW = 256


def entry_key(source: str, offset: int, index: int = 0) -> str:
    """The key of the ``index``-th entry made at entry ``offset`` of stream ``source``."""
    return f"{source}/{format_offset(offset)}/{index}"


def stage_dead_letters(
    store: RedisStore, stream: str, letters: Sequence[DeadLetter], ids: Sequence[str]
) -> dict[str, bytes | None]:
    """Append the dead letters of a batch, whose stream entry ids are ``ids``, to ``stream``
    in the store's next commit, each with its key, in the order of their entries (so that
    their keys grow); their rows for the ``deadletter`` namespace, keyed ``{source}:{id}``."""
    for letter in sorted(letters, key=lambda d: d.offset):
        fields = {"raw": letter.raw, "reason": letter.reason, "source": letter.source}
        key = entry_key(letter.source, letter.offset)
        store.stage_append(stream, {**fields, KEY_FIELD: key})
    encode = msgspec.json.encode
    return {f"{d.source}:{i}": encode(d) for i, d in zip(ids, letters, strict=True)}


def _position(key: bytes | str) -> tuple[str, tuple[int, int]] | None:
    """A key's source and position (entry offset, index); None for a text not a key of ours."""
    text = key.decode() if isinstance(key, bytes) else key
    try:
        source, entry_id, index = text.rsplit("/", 2)
        return source, (entry_offset(entry_id), int(index))
    except (ValueError, SourceError):
        return None


class Seen:
    """The highest key position seen per source: which entries a reader has read already."""

    def __init__(self) -> None:
        self.high: dict[str, tuple[int, int]] = {}

    def fresh(self, key: bytes | str | None) -> bool:
        """Whether the entry of ``key`` is new to this reader (and note it seen)."""
        found = None if key is None else _position(key)
        if found is None:
            return True  # no key, or not a key of ours: always new
        source, position = found
        last = self.high.get(source)
        if last is not None and position <= last:
            return False
        self.high[source] = position
        return True


class Replays:
    """The segment changes read from the last ``window`` batches of each source (their last
    change per user and segment), to drop from a batch that replays them what the reader has.

    A batch from ``first`` on replays the batches read that end at or after ``first``; it
    takes their place, holding what the reader read from them.

    >>> replays = Replays()
    >>> replays.fresh("s", end=5, first=1, user="u1", segment="vip", change="enter")
    True
    >>> # the batch made again, ending later: u1's enter is read, u2's is new
    >>> [replays.fresh("s", 9, 1, u, "vip", "enter") for u in ("u1", "u2")]
    [False, True]
    >>> replays.fresh("s", 12, 10, "u1", "vip", "exit")  # a batch after it
    True
    """

    def __init__(self, window: int = REPLAY_WINDOW) -> None:
        self.window = window
        self.batches: dict[str, deque[tuple[int, dict[tuple[str, str], str]]]] = {}
        #: per source, the changes read that its current batch replays (None: it replays none)
        self.replayed: dict[str, dict[tuple[str, str], str] | None] = {}

    def fresh(
        self, source: str, end: int, first: int, user: str, segment: str, change: str
    ) -> bool:
        """Whether the change of a batch of ``source`` from entry ``first`` to ``end`` is new
        to this reader (and note it read)."""
        batches = self.batches.setdefault(source, deque())
        if not batches or batches[-1][0] != end:  # the first change of a batch
            replaced: list[dict[tuple[str, str], str]] = []
            while batches and batches[-1][0] >= first:
                replaced.append(batches.pop()[1])
            held: dict[tuple[str, str], str] = {}
            for read in reversed(replaced):
                held.update(read)
            self.replayed[source] = dict(held) if replaced else None
            batches.append((end, held))
            if len(batches) > self.window:
                batches.popleft()
        replayed, held = self.replayed[source], batches[-1][1]
        if replayed is not None and replayed.get((user, segment)) == change:
            return False
        held[user, segment] = change
        return True


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Follower:
    """Reads a stream's new entries in order, each once (:meth:`read`), from ``after`` (an
    entry id; ``"0-0"``: from the start): by their keys (:class:`Seen`), and the segment
    changes of a batch that replays batches read (of the last ``window`` per source) by what
    was read from them (:class:`Replays`).

    A stream that went back in time (its newest entry is older than the last one read) is read
    again from its newest entry: the entries appended since are the lost ones applied again
    (dropped by their keys, as :class:`Seen` says) and new ones.

    >>> client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    >>> stream = "liveprofile-doctest:segment-changes"
    >>> for key in ("s:events:0/1-0/0", "s:events:0/1-0/1", "s:events:0/1-0/0"):
    ...     _ = client.xadd(stream, {"user_id": "u1", KEY_FIELD: key})
    >>> [fields[KEY_FIELD] for _, fields in Follower(client, stream).read()]
    ['s:events:0/1-0/0', 's:events:0/1-0/1']
    >>> _ = client.delete(stream)
    >>> client.close()
    """

    def __init__(
        self, client: redis.Redis, stream: str, *, after: str = "0-0", window: int = REPLAY_WINDOW
    ) -> None:
        self.client, self.stream, self.after = client, stream, after
        self.seen, self.replays = Seen(), Replays(window)

    def read(self, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        """Up to ``count`` entries new to this reader: (entry id, fields as text)."""
        newest = cast(list[Any], self.client.xrevrange(self.stream, "+", "-", count=1))
        if newest and _id(newest[0][0]) < _id(self.after):
            self.after = newest[0][0].decode()
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            self.client.xrange(self.stream, f"({self.after}", "+", count),
        )
        out = []
        for entry_id, raw in entries:
            self.after = entry_id.decode()
            fields = {k.decode(): v.decode() for k, v in raw.items()}
            if self._fresh(fields):
                out.append((self.after, fields))
        return out

    def _fresh(self, fields: dict[str, str]) -> bool:
        key, first = fields.get(KEY_FIELD), fields.get(FIRST_FIELD)
        if not self.seen.fresh(key):
            return False
        found = None if key is None or first is None else _position(key)
        if found is None or first is None:
            return True  # a dead letter (its key alone says), or an entry without a key
        (source, (end, _)), user = found, fields.get("user_id", "")
        try:
            start = entry_offset(first)
        except SourceError:
            return True
        segment, change = fields.get("segment", ""), fields.get("change", "")
        return self.replays.fresh(source, end, start, user, segment, change)

    def follow(self, poll: float = 0.5) -> Iterator[tuple[str, dict[str, str]] | None]:
        """The entries new to this reader as they come (see :meth:`read`), and None each time
        it has read all there was, before waiting ``poll`` seconds for more; never ends."""
        while True:
            before = self.after
            yield from self.read()
            if self.after == before:
                yield None
                time.sleep(poll)


def tail(
    follower: Follower, last: int, keep: Callable[[dict[str, str]], bool], poll: float = 0.5
) -> Iterator[dict[str, str]]:
    """The fields of the ``last`` entries ``keep`` accepts among those ``follower`` finds
    now, then of each such entry as it comes, as ``tail -f``; never ends."""
    backlog: deque[dict[str, str]] | None = deque(maxlen=last)
    for entry in follower.follow(poll):
        if entry is None:
            if backlog is not None:
                yield from backlog
                backlog = None
        elif keep(entry[1]):
            if backlog is None:
                yield entry[1]
            else:
                backlog.append(entry[1])

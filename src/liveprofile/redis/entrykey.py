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
below it. Entries without a key (the HTTP collector's dead letters, appended once by the
request) are always new. :class:`Follower` reads a stream this way.

A dead letter's key names its own event entry, so it holds whatever the batches. Segment changes
are made per batch: the replayed batch is the lost one (the worker reads its pending entries
first, in the same order) unless the lost second also held the delivery of the batch's entries
and more entries had arrived since; then it ends later, and its changes, under keys further on,
all reach the reader, which may so see a change both as the lost batch made it and as the
replayed one does (at least once). Event entries lost with that second are never applied: a
reader may have read changes they made, and a replayed batch that so ends before the lost one
has its changes taken for read ones (publish with ``appendfsync always`` to rule that out).

>>> key = entry_key("shop:events:0", (1700000000000 << 22) + 5, 2)
>>> key
'shop:events:0/1700000000000-5/2'
>>> seen = Seen()
>>> [seen.fresh(k) for k in (key, key, entry_key("shop:events:1", 7), None, "other")]
[True, False, True, True, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import msgspec
import redis

from liveprofile.errors import SourceError
from liveprofile.events.deadletter import DeadLetter
from liveprofile.redis.store import RedisStore
from liveprofile.redis.streams import entry_offset, format_offset

#: field of a dead-letter or segment-change entry that names what made it (see above)
KEY_FIELD = "key"


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


class Seen:
    """The highest key position seen per source: which entries a reader has read already."""

    def __init__(self) -> None:
        self.high: dict[str, tuple[int, int]] = {}

    def fresh(self, key: bytes | str | None) -> bool:
        """Whether the entry of ``key`` is new to this reader (and note it seen)."""
        if key is None:
            return True
        text = key.decode() if isinstance(key, bytes) else key
        try:
            source, entry_id, index = text.rsplit("/", 2)
            position = (entry_offset(entry_id), int(index))
        except (ValueError, SourceError):
            return True  # not a key of ours: as an entry without one
        last = self.high.get(source)
        if last is not None and position <= last:
            return False
        self.high[source] = position
        return True


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Follower:
    """Reads a stream's new entries in order, each once (:meth:`read`), from ``after`` (an
    entry id; ``"0-0"``: from the start).

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

    def __init__(self, client: redis.Redis, stream: str, *, after: str = "0-0") -> None:
        self.client, self.stream, self.after = client, stream, after
        self.seen = Seen()

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
        for entry_id, fields in entries:
            self.after = entry_id.decode()
            if self.seen.fresh(fields.get(KEY_FIELD.encode())):
                out.append((self.after, {k.decode(): v.decode() for k, v in fields.items()}))
        return out

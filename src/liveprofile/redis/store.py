"""A Redis store: one hash per namespace, one transaction per commit.

Rows of namespace ``ns`` live in the hash ``{prefix}:{ns}`` and blobs in ``{prefix}:meta``;
a key-set namespace (:func:`~liveprofile.store.base.is_keyset`) is the sorted set
``{prefix}:{ns}`` of its keys (all of score 0, so in key order: ``ZRANGEBYLEX`` finds the keys
under a prefix);
a batch read is one ``HMGET`` and a commit is one ``MULTI``/``EXEC`` pipeline, so profiles, models
and the source offset become visible together or not at all.

>>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="liveprofile-doctest")
>>> store.setup()
>>> store.commit({"profile": {"u1": b"x"}}, {"offset": b"1"})
>>> store.read("profile", ["u1", "u2"]), store.get_meta("offset")
([b'x', None], b'1')
>>> store.drop()
>>> store.close()
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

import redis

from liveprofile.errors import StoreError
from liveprofile.redis import modeldelta
from liveprofile.redis.streams import TRIM_SCRIPT
from liveprofile.store.base import MODEL_PREFIX, Rows, check_keyset_rows, is_keyset

if TYPE_CHECKING:
    from liveprofile.learn.tracked import ModelUpdate
    from liveprofile.redis.lease import Lease

#: what redis-py accepts as a hash field or value
_Field = bytes | bytearray | memoryview | str | int | float


def reply(value: object) -> Any:
    """A reply of redis-py's blocking client, as it returns it (redis-py 5's type hints also
    allow an awaitable, which a blocking client never returns).

    >>> reply(3)
    3
    """
    return value


class RedisStore:
    """Rows and blobs in Redis hashes under a key prefix; a model as a whole checkpoint plus
    the coordinates each batch changed (:mod:`liveprofile.redis.modeldelta`)."""

    #: takes a model as the coordinates a batch changed (:mod:`liveprofile.learn.tracked`)
    writes_model_deltas = True

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str | None = None) -> None:
        query = parse_qs(urlsplit(url).query)
        self.prefix = prefix or query.get("prefix", ["liveprofile"])[0]
        self.url = url.split("?", 1)[0]
        self._client: redis.Redis | None = None
        self._appends: list[tuple[str, dict[_Field, _Field], int | None]] = []
        self._removals: list[tuple[str, list[str]]] = []
        #: stream entries to acknowledge in the next commit: (stream, group, entry ids)
        self._acks: list[tuple[str, str, list[bytes]]] = []
        #: streams to trim in the next commit: (stream, entry id to keep at least)
        self._trims: list[tuple[str, str]] = []
        self._models: dict[str, ModelUpdate] = {}
        self._chains: dict[str, modeldelta.Chain] = {}

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self.setup()
        assert self._client is not None
        return self._client

    def _key(self, namespace: str) -> str:
        return f"{self.prefix}:{namespace}"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise StoreError(f"cannot {what} at {self.url} ({self.prefix}): {exc}") from None

    def setup(self) -> None:
        if self._client is not None:
            return
        with self._errors("connect"):
            client = redis.Redis.from_url(self.url)
            client.ping()
        self._client = client

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        with self._errors("read"):
            if is_keyset(namespace):
                scores = cast(list[Any], self.client.zmscore(self._key(namespace), list(keys)))
                return [None if v is None else b"" for v in scores]
            values = cast(list[Any], self.client.hmget(self._key(namespace), list(keys)))
        return [None if v is None else bytes(cast(bytes, v)) for v in values]

    def read_many(self, reads: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]:
        """Rows of several namespaces in one round trip (one ``HMGET``, or ``ZMSCORE`` on a
        key set, per namespace, pipelined), as :meth:`read` returns them; namespace ``meta``
        reads blobs (not models: :meth:`get_meta` reads those).

        >>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="liveprofile-doctest-many")
        >>> store.commit({"profile": {"u1": b"x"}}, {"offset": b"1"})
        >>> store.read_many({"profile": ["u1", "u2"], "meta": ["offset"]})
        {'profile': [b'x', None], 'meta': [b'1']}
        >>> store.drop()
        >>> store.close()
        """
        asked = [(ns, list(keys)) for ns, keys in reads.items() if keys]
        with self._errors("read"), self.client.pipeline(transaction=False) as pipe:
            for namespace, keys in asked:
                if is_keyset(namespace):
                    pipe.zmscore(self._key(namespace), keys)
                else:
                    pipe.hmget(self._key(namespace), keys)
            found = pipe.execute() if asked else []
        out: dict[str, list[bytes | None]] = {ns: [] for ns in reads}
        for (namespace, _), values in zip(asked, found, strict=True):
            if is_keyset(namespace):
                out[namespace] = [None if v is None else b"" for v in values]
            else:
                out[namespace] = [None if v is None else bytes(v) for v in values]
        return out

    def keys_under(self, namespace: str, prefixes: Sequence[str]) -> list[list[str]]:
        """One ``ZRANGEBYLEX`` per prefix, pipelined, on a key-set namespace; on a hash, its
        keys (``HKEYS``) filtered."""
        key = self._key(namespace)
        with self._errors("read"):
            if not is_keyset(namespace):
                names = sorted(k.decode() for k in cast(list[bytes], self.client.hkeys(key)))
                return [[n for n in names if n.startswith(p)] for p in prefixes]
            with self.client.pipeline(transaction=False) as pipe:
                for prefix in prefixes:
                    start = prefix.encode()
                    pipe.zrangebylex(key, b"[" + start, b"(" + start + b"\xff")
                found = pipe.execute()
        return [[k.decode() for k in keys] for keys in found]

    def scan(
        self, namespace: str, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        """Rows in key order. Hashes are unordered, so a page costs reading the namespace's
        keys (``HKEYS``) and then the page's values (``HMGET``)."""
        key = self._key(namespace)
        if is_keyset(namespace):
            low = b"-" if after is None else b"(" + after.encode()
            with self._errors("scan"):
                if limit is None:
                    found = self.client.zrangebylex(key, low, b"+")
                else:
                    found = self.client.zrangebylex(key, low, b"+", start=0, num=limit)
            for field in cast(list[bytes], found):
                yield field.decode(), b""
            return
        with self._errors("scan"):
            if after is None and limit is None:
                rows = cast(dict[bytes, bytes], self.client.hgetall(key))
                for field in sorted(rows):
                    yield field.decode(), rows[field]
                return
            names = sorted(k.decode() for k in cast(list[bytes], self.client.hkeys(key)))
        if after is not None:
            names = names[bisect.bisect_right(names, after) :]
        if limit is not None:
            names = names[:limit]
        for name, value in zip(names, self.read(namespace, names), strict=True):
            if value is not None:
                yield name, value

    def count(self, namespace: str) -> int:
        with self._errors("count"):
            if is_keyset(namespace):
                return int(reply(self.client.zcard(self._key(namespace))))
            return int(reply(self.client.hlen(self._key(namespace))))

    def get_meta(self, name: str) -> bytes | None:
        with self._errors("read"):
            if name.startswith(MODEL_PREFIX):
                key = modeldelta.delta_key(self.prefix, name)
                return modeldelta.read_model(self.client, self._key("meta"), key, name)
            value = self.client.hget(self._key("meta"), name)
        return None if value is None else bytes(cast(bytes, value))

    def stage_model(self, name: str, update: ModelUpdate) -> None:
        """Write a model update as blob ``name`` in the next :meth:`commit`: as a delta when
        it follows the update this store wrote last, else whole."""
        self._models[name] = update

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        values = [v for changes in rows.values() for v in changes.values() if v is not None]
        bad = [v for v in (*values, *meta.values()) if not isinstance(v, bytes | bytearray)]
        if bad:
            raise StoreError(f"cannot commit {type(bad[0]).__name__}: values must be bytes")
        check_keyset_rows(rows)
        appends, self._appends = self._appends, []
        removals, self._removals = self._removals, []
        models, self._models = self._models, {}
        models = {name: u for name, u in models.items() if name not in meta}
        try:
            with self._errors("commit"), self.client.pipeline(transaction=True) as pipe:
                plans = modeldelta.plan(pipe, self.prefix, self._chains, models)
                if pipe.watching:
                    pipe.multi()
                self._queue_writes(pipe, (removals, appends), rows, meta)
                modeldelta.queue(pipe, self.prefix, self._key("meta"), plans)
                pipe.execute()
        except BaseException:
            self._chains.clear()  # the commit may or may not have happened: write whole next
            raise
        for name in meta:
            self._chains.pop(name, None)
        self._chains.update({name: chain for name, (chain, _, _) in plans.items()})

    def _queue_writes(
        self, pipe: Any, streams: tuple[list[Any], list[Any]], rows: Rows, meta: Mapping[str, bytes]
    ) -> None:
        """Queue a commit's writes on ``pipe`` (in its ``MULTI``): the staged stream removals
        and appends (``streams``), the rows' upserts and deletes, and the whole ``meta`` blobs
        (which end any model's chain of deltas)."""
        removals, appends = streams
        for stream, ids in removals:
            pipe.xdel(stream, *ids)
        for stream, fields, maxlen in appends:
            pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
        acks, self._acks = self._acks, []
        for stream, group, entry_ids in acks:
            pipe.xack(stream, group, *entry_ids)
        trims, self._trims = self._trims, []
        for stream, minid in trims:
            pipe.eval(TRIM_SCRIPT, 1, stream, minid)
        for namespace, changes in rows.items():
            upserts: dict[_Field, _Field] = {k: v for k, v in changes.items() if v is not None}
            deletes = [k for k, v in changes.items() if v is None]
            if is_keyset(namespace):
                _queue_keyset(pipe, self._key(namespace), list(upserts), deletes)
                continue
            if upserts:
                pipe.hset(self._key(namespace), mapping=upserts)
            if deletes:
                pipe.hdel(self._key(namespace), *deletes)
        if meta:
            blobs: dict[_Field, _Field] = {k: v for k, v in meta.items()}
            pipe.hset(self._key("meta"), mapping=blobs)
            modeldelta.clear_deltas(pipe, self.prefix, meta)

    def stage_append(
        self, stream: str, fields: Mapping[str, bytes | str], *, maxlen: int | None = None
    ) -> None:
        """Append an entry to ``stream`` as part of the next :meth:`commit` (same ``MULTI``),
        e.g. a dead letter that must be logged exactly when its batch commits. With ``maxlen``
        the stream is trimmed to about that many entries."""
        entry: dict[_Field, _Field] = {k: v for k, v in fields.items()}
        self._appends.append((stream, entry, maxlen))

    def stage_ack(self, stream: str, group: str, ids: Sequence[bytes]) -> None:
        """Acknowledge entries of ``stream`` read by consumer group ``group`` in the next
        :meth:`commit` (same ``MULTI``): the entries a batch applied are acknowledged exactly
        when its effects commit, so a server that loses the commit loses the ack with it."""
        if ids:
            self._acks.append((stream, group, list(ids)))

    def stage_trim(self, stream: str, minid: str) -> None:
        """Delete the entries of ``stream`` older than ``minid`` in the next :meth:`commit`
        (same ``MULTI``, after its acknowledgements), but none that a consumer group has not
        read and acknowledged yet (:data:`~liveprofile.redis.streams.TRIM_SCRIPT`): a commit
        the server loses loses its trim with it, and no other reader of the stream loses an
        entry."""
        self._trims.append((stream, minid))

    def stage_remove(self, stream: str, ids: Sequence[str]) -> None:
        """Delete entries of ``stream`` as part of the next :meth:`commit` (privacy erasure)."""
        if ids:
            self._removals.append((stream, list(ids)))

    def writer_lease(self, scope: str | None, owner: str, lease_s: float) -> Lease:
        """This store's writer lock (:func:`liveprofile.store.lock.writer_lock`): the lease
        key ``{prefix}:writer[:scope]``, taken for ``owner``."""
        from liveprofile.redis.lease import Lease

        key = f"{self.prefix}:writer" + (f":{scope}" if scope else "")
        return Lease(redis.Redis.from_url(self.url), key, owner, lease_s)

    def drop(self) -> None:
        """Delete every key of this store's prefix (for tests and privacy erasure)."""
        with self._errors("drop"):
            keys = list(self.client.scan_iter(match=f"{self.prefix}:*", count=1000))
            if keys:
                self.client.delete(*keys)

    def close(self) -> None:
        # staged for a commit that did not happen
        self._appends, self._removals, self._acks, self._trims = [], [], [], []
        self._models, self._chains = {}, {}
        if self._client is not None:
            self._client.close()
            self._client = None


#: members per ``ZADD``/``ZREM`` of a commit (a first index build writes millions)
_KEYS_PER_CALL = 10_000


def _queue_keyset(pipe: Any, key: str, adds: list[_Field], deletes: list[str]) -> None:
    """Queue the changes of a key-set namespace: its keys added to and removed from the sorted
    set ``key`` (score 0)."""
    for start in range(0, len(adds), _KEYS_PER_CALL):
        pipe.zadd(key, dict.fromkeys(adds[start : start + _KEYS_PER_CALL], 0))
    for start in range(0, len(deletes), _KEYS_PER_CALL):
        pipe.zrem(key, *deletes[start : start + _KEYS_PER_CALL])

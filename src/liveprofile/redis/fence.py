"""A Redis store whose commits are fenced per partition: a stale owner cannot commit.

When a partition moves from worker A to worker B, B loads the partition's state and goes on;
should A still commit a batch of that partition afterwards (A stalled past the group's session
timeout and was expelled without noticing), that batch would be applied twice. Each partition
therefore has a fence key, ``{prefix}:fence:{scope}``, holding the checkpoint sequence of its
last commit. A commit names the sequence its state continued from; it ``WATCH``es the fence,
checks it and bumps it inside the same ``MULTI``/``EXEC`` as the rows, so exactly one of two
owners that loaded the same state can commit, and the other learns it is stale.

With :attr:`FencedRedisStore.overlap`, a fenced commit is queued in full by the caller and sent
by a background thread, so the caller reads and applies its next batch while Redis applies the
last one. Every other use of the store waits for that commit first (:meth:`~FencedRedisStore.
settle`, through :attr:`~FencedRedisStore.client`): commits land one after another in the order
made, and a read always sees this store's own commits. A commit that failed raises
:class:`CommitFailed` (naming its partition) at that next use; its partition's state ran ahead of
the store, as after a failed commit made in the foreground. As the commit's fence was not moved,
any later commit of that state is refused anyway (:class:`FencedOut`).

The next batch's reads do not wait for the commit in flight, so that batch runs on up to its
own commit: :meth:`~FencedRedisStore.read` gives the rows that commit writes from its own copy
(what the store holds once it lands) and reads the others from Redis at once;
:meth:`~FencedRedisStore.get_meta` reads at once a blob it does not write (another partition's
checkpoint); :meth:`~FencedRedisStore.read_rows` reads the shared model's rows together with
the commit's fence, in one transaction, and, if the fence shows the commit has not landed yet,
makes the commit's merge of those rows here, as the merge script will (so a batch reads what it
would have read after waiting, bit for bit). Reads of rows the commit merges or counts into by
name (OGD's step count), and every other use, wait. A batch that read beside a commit that then
failed fails too, at its own commit at the latest, and is read again with the failed one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, cast

import redis

from liveprofile.errors import StoreError
from liveprofile.redis import packed
from liveprofile.redis.store import RedisStore
from liveprofile.store.base import MODEL_PREFIX, Rows, is_keyset

#: merges one batch's changes of a shared model's named single-value rows, such as OGD's step
#: count ``t:0`` (the coordinates go through :data:`liveprofile.redis.packed.MERGE_SCRIPT`;
#: KEYS[1]: the model's hash; ARGV: field, value read before the batch, value after it, as
#: little-endian float64s, for each changed row). A row still at the value read gets the
#: batch's value exactly; one another worker changed meanwhile gets the batch's difference added.
MERGE_SCRIPT = """
local key = KEYS[1]
local zero = struct.pack('<d', 0.0)
for i = 1, #ARGV, 3 do
  local field, before, after = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local current = redis.call('HGET', key, field)
  if not current then current = zero end
  if current == before then
    redis.call('HSET', key, field, after)
  else
    local c = struct.unpack('<d', current)
    local b = struct.unpack('<d', before)
    local a = struct.unpack('<d', after)
    redis.call('HSET', key, field, struct.pack('<d', c + (a - b)))
  end
end
return #ARGV / 3
"""
log = logging.getLogger("liveprofile")

#: the store namespace (a Redis hash) of each partition scope's batch in flight: its latest
#: event time, as announced before the batch is applied (:mod:`liveprofile.kafka.align`)
STARTED_NAMESPACE = "started"

#: coordinates per script call (a batch's merge is several calls in its one ``MULTI``)
MERGE_CHUNK = 4096


class FencedOut(StoreError):
    """Another owner committed this partition since this worker loaded it."""


class CommitFailed(StoreError):
    """A commit sent in the background (:attr:`FencedRedisStore.overlap`) failed: partition
    ``scope``'s state is ahead of the store. The commit's own error is ``__cause__``."""

    def __init__(self, scope: str, error: BaseException) -> None:
        super().__init__(f"the commit of {scope} failed: {error}")
        self.scope = scope
        self.fenced_out = isinstance(error, FencedOut)


@contextmanager
def _fenced(pipe: Any, key: str, scope: str, seq: int) -> Iterator[None]:
    """Watch partition ``scope``'s fence ``key`` on ``pipe`` and open its ``MULTI`` if the fence
    is at ``seq``; :class:`FencedOut` if it is not, or if it moves before the ``EXEC``."""
    try:
        pipe.watch(key)
        current = pipe.get(key)
        if (0 if current is None else int(cast(Any, current))) != seq:
            raise FencedOut(f"partition state {scope} was committed by another worker")
        pipe.multi()
        yield
    except redis.WatchError:
        raise FencedOut(f"partition state {scope} was committed by another worker") from None


class FencedRedisStore(RedisStore):
    """:class:`RedisStore` whose :meth:`commit` checks and advances :attr:`fence` when set.

    ``fence`` is ``(scope, sequence the state continued from)``; None commits unfenced (setup).
    """

    fence: tuple[str, int] | None = None
    #: models are written whole (a fenced commit has no model deltas)
    writes_model_deltas = False
    #: send fenced commits from a background thread (see the module's doc)
    overlap = False

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str | None = None) -> None:
        super().__init__(url, prefix=prefix)
        #: shared-model merges staged for the next fenced commit: (namespace, script args)
        self._merges: list[tuple[str, list[bytes]]] = []
        #: packed shared-model merges staged for the next fenced commit: (namespace, indices,
        #: before, after, bytes per row), see :mod:`liveprofile.redis.packed`
        self._packed: list[tuple[str, bytes, bytes, bytes, int]] = []
        #: counters staged for the next fenced commit: (namespace, field, increment)
        self._counts: list[tuple[str, str, int]] = []
        #: the fenced commit sent in the background: (its partition scope, its outcome)
        self._pending: tuple[str, Future[None]] | None = None
        self._sender: ThreadPoolExecutor | None = None
        #: what that commit writes (reads beside it, see the module)
        self._flying = _Flight()
        self._beside = False

    @property
    def client(self) -> redis.Redis:
        """The connection, once the commit sent in the background (if any) has landed."""
        if self._pending is not None and not self._beside:
            self.settle()
        return super().client

    def settle(self) -> None:
        """Wait for the fenced commit sent in the background, if any; raise
        :class:`CommitFailed` if it failed (once: the store is usable again after)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._flying = _Flight()
        scope, outcome = pending
        try:
            outcome.result()
        except Exception as exc:
            raise CommitFailed(scope, exc) from exc

    def in_flight(self) -> str | None:
        """The partition scope of the commit sent in the background and not known to have
        landed (None: none; one that has finished is settled here, so its failure raises)."""
        if self._pending is None:
            return None
        scope, outcome = self._pending
        if outcome.done():
            self.settle()
            return None
        return scope

    @contextmanager
    def beside(self) -> Iterator[None]:
        """Use the connection without waiting for the commit in flight: for keys it does not
        write (an event-time announcement, another partition's rows)."""
        self._beside = True
        try:
            yield
        finally:
            self._beside = False

    def announce(self, scope: str, ts: float) -> None:
        """Record that partition ``scope``'s batch being applied now reaches event time ``ts``
        (a pacing hint for the other workers, sent beside a commit in flight, which does not
        write it; a failure is logged, not raised)."""
        try:
            with self.beside():
                self.client.hset(f"{self.prefix}:{STARTED_NAMESPACE}", scope, repr(float(ts)))
        except redis.RedisError as exc:
            log.debug("batch of %s not announced: %s", scope, exc)

    def started(self, scope: str) -> float:
        """The event time the last announced batch of ``scope`` reaches (``-inf``: none),
        read beside a commit in flight."""
        try:
            with self.beside():
                value: Any = self.client.hget(f"{self.prefix}:{STARTED_NAMESPACE}", scope)
        except redis.RedisError as exc:
            log.debug("batch of %s not read: %s", scope, exc)
            return -math.inf
        return -math.inf if value is None else float(value)

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        """Rows of ``namespace``; with a commit in flight, those it writes from its copy and
        the others at once, unless it merges or counts into ``namespace`` (see the module)."""
        flight = self._flying
        if self.in_flight() is None or namespace in flight.merged:
            return super().read(namespace, keys)
        writes = flight.rows.get(namespace, {})
        rest = [k for k in keys if k not in writes]
        with self.beside():
            found = dict(zip(rest, super().read(namespace, rest), strict=True))
        empty = b"" if is_keyset(namespace) else None
        return [found[k] if k not in writes else _row(writes[k], empty) for k in keys]

    def read_many(self, reads: Mapping[str, Sequence[str]]) -> dict[str, list[bytes | None]]:
        """Rows of several namespaces in one round trip; at once, beside the commit in flight,
        when that commit writes none of them (else once it has landed)."""
        flight = self._flying
        if self.in_flight() is None or any(
            namespace in flight.merged
            or (namespace == "meta" and not flight.blobs.isdisjoint(keys))
            or not flight.rows.get(namespace, {}).keys().isdisjoint(keys)
            for namespace, keys in reads.items()
        ):
            return super().read_many(reads)
        with self.beside():
            return super().read_many(reads)

    def get_meta(self, name: str) -> bytes | None:
        """A blob; at once, beside the commit in flight, when that commit does not write it."""
        if name in self._flying.blobs or name.startswith(MODEL_PREFIX) or not self.in_flight():
            return super().get_meta(name)
        with self.beside():
            return super().get_meta(name)

    def read_rows(self, namespace: str, indices: bytes, width: int) -> bytes:
        """The shared-model rows of ``indices`` (packed little-endian uint32s), ``width`` bytes
        each, concatenated (zeros for rows not written yet), in one round trip."""
        flight = self._flying
        merges = [m for m in flight.packed if m[0] == namespace]
        if not indices or not self.in_flight() or not {m[4] for m in merges} <= {width}:
            with self._errors("read"):
                blob = packed.read_rows(self.client, self._key(namespace), indices, width)
        else:  # beside the commit in flight, with its merge made here if it has not landed
            key = self._key(namespace)
            with self.beside(), self._errors("read"), self.client.pipeline() as pipe:
                pipe.get(flight.fence)
                pipe.eval_ro(packed.READ_SCRIPT, 1, key, indices, width)  # Redis 7
                fence, blob = pipe.execute()
            if fence is None or int(fence) != flight.landed:
                blob = packed.merge_locally(bytes(blob), indices, width, [m[1:4] for m in merges])
        if len(blob) != len(indices) // 4 * width:
            raise StoreError(
                f"shared model {namespace} at {self.url} ({self.prefix}) has rows of another "
                f"size than {width} bytes: it was written by another learner; replay the events "
                "into a new store"
            )
        return blob

    def stage_rows(
        self, namespace: str, indices: bytes, before: bytes, after: bytes, width: int
    ) -> None:
        """Merge the shared-model rows of ``indices`` in the next fenced :meth:`commit` (same
        ``MULTI``): they held ``before`` when read and ``after`` after the batch (see
        :data:`liveprofile.redis.packed.MERGE_SCRIPT`)."""
        if indices:
            self._packed.append((namespace, indices, before, after, width))

    def stage_merge(self, namespace: str, fields: list[str], before: bytes, after: bytes) -> None:
        """Merge coordinates of a shared model in the next fenced :meth:`commit` (same
        ``MULTI``): ``fields`` had the float64s ``before`` when read and ``after`` after the
        batch (see :data:`MERGE_SCRIPT`)."""
        if not fields:
            return
        args: list[bytes] = []
        for k, field in enumerate(fields):
            args += [field.encode(), before[8 * k : 8 * k + 8], after[8 * k : 8 * k + 8]]
        self._merges.append((namespace, args))

    def stage_count(self, namespace: str, field: str, increment: int) -> None:
        """Add ``increment`` to the integer row ``field`` in the next fenced commit."""
        if increment:
            self._counts.append((namespace, field, increment))

    def discard_staged(self) -> None:
        """Forget merges and counters staged for a commit that will not happen."""
        self._merges, self._counts, self._packed = [], [], []

    @contextmanager
    def fenced_by(self, scope: str, seq: int) -> Iterator[None]:
        """Fence the commits made inside by partition ``scope`` at ``seq`` (its state's last
        commit); afterwards, and on any error, no fence and nothing staged is left."""
        self.fence = (scope, seq)
        self.discard_staged()
        try:
            yield
        finally:
            self.fence = None
            self.discard_staged()  # left only by a batch that failed before its commit

    def fence_key(self, scope: str) -> str:
        return f"{self.prefix}:fence:{scope}"

    def fence_value(self, scope: str) -> int:
        """The checkpoint sequence of the partition's last commit (0 before any)."""
        with self._errors("read"):
            value = self.client.get(self.fence_key(scope))
        return 0 if value is None else int(cast(Any, value))

    def commit_meta_if_owner(self, scope: str, seq: int, meta: Mapping[str, bytes]) -> None:
        """Write ``meta`` blobs if partition ``scope``'s fence is still at ``seq`` (the owner's
        last commit), in one ``WATCH``/``MULTI``; the fence is checked, not advanced. Raises
        :class:`FencedOut` when another owner has committed the partition since."""
        key = self.fence_key(scope)
        with (
            self._errors("commit"),
            self.client.pipeline(transaction=True) as pipe,
            _fenced(pipe, key, scope, seq),
        ):
            pipe.hset(self._key("meta"), mapping=cast(Any, dict(meta)))
            pipe.execute()

    def close(self) -> None:
        try:
            self.settle()
        except CommitFailed as exc:  # its batch is read again from the offset in the store
            log.warning("%s", exc)
        finally:
            if self._sender is not None:
                self._sender.shutdown()
                self._sender = None
            self.discard_staged()
            super().close()

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        if self.fence is None:
            super().commit(rows, meta)
            return
        scope, expected = self.fence
        key = self.fence_key(scope)
        appends, self._appends = self._appends, []
        removals, self._removals = self._removals, []
        merges, counts, rows_merged = self._merges, self._counts, self._packed
        self.discard_staged()
        # queued whole here (the values are copied into the pipeline's commands), checked and
        # sent by _send: here or, with overlap, on the sender thread
        pipe = self.client.pipeline(transaction=True)
        self._queue_writes(pipe, (removals, appends), rows, meta)
        for namespace, args in merges:
            for start in range(0, len(args), 3 * MERGE_CHUNK):
                chunk = args[start : start + 3 * MERGE_CHUNK]
                pipe.eval(MERGE_SCRIPT, 1, self._key(namespace), *cast(list[Any], chunk))
        for namespace, indices, before, after, width in rows_merged:
            packed.merge_rows(pipe, self._key(namespace), indices, before, after, width)
        for namespace, field, increment in counts:
            pipe.hincrby(self._key(namespace), field, increment)
        pipe.set(key, expected + 1)
        if not self.overlap:
            self._send(pipe, key, scope, expected)
            return
        if self._sender is None:
            self._sender = ThreadPoolExecutor(1, thread_name_prefix="liveprofile-commit")
        self._pending = (scope, self._sender.submit(self._send, pipe, key, scope, expected))
        opaque = {m[0] for m in merges} | {c[0] for c in counts}
        self._flying = _Flight(
            rows, frozenset(meta), frozenset(opaque), rows_merged, key, expected + 1
        )

    def _send(self, pipe: Any, key: str, scope: str, expected: int) -> None:
        """Watch the fence ``key``, check it is at ``expected`` and run the commands queued on
        ``pipe`` in one ``MULTI``/``EXEC`` (:class:`FencedOut` if the fence is or moves
        elsewhere)."""
        stale = f"partition state {scope} was committed by another worker"
        with self._errors("commit"), pipe:
            try:
                pipe.watch(key)  # runs at once, ahead of the queued commands
                current = pipe.get(key)
                if (0 if current is None else int(cast(Any, current))) != expected:
                    raise FencedOut(stale)
                pipe.execute()
            except redis.WatchError:
                raise FencedOut(stale) from None


@dataclasses.dataclass(frozen=True)
class _Flight:
    """What the commit in flight writes: its ``rows``, the names of its ``blobs``, the
    namespaces it ``merged`` or counted into by name (reads of those wait for it), its
    ``packed`` shared-model merges, and its ``fence`` key, at ``landed`` once it has landed."""

    rows: Rows = dataclasses.field(default_factory=dict)
    blobs: frozenset[str] = frozenset()
    merged: frozenset[str] = frozenset()
    packed: list[tuple[str, bytes, bytes, bytes, int]] = dataclasses.field(default_factory=list)
    fence: str = ""
    landed: int = -1


def _row(value: bytes | None, empty: bytes | None) -> bytes | None:
    """A row as a commit writes it, as a read returns it (``empty``: a key set's ``b""``).

    >>> _row(b"x", None), _row(None, None), _row(b"", b"")
    (b'x', None, b'')
    """
    if value is None:
        return None
    return bytes(value) if empty is None else empty

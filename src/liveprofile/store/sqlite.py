"""The embedded default store: one SQLite file in WAL mode.

A commit is one transaction, so profiles, model checkpoints and the source offset are durable
together or not at all; readers (the CLI, a server) see the last commit while a replay runs.

A model is not written whole every batch: after a first whole write, a commit adds a row to
``meta_delta`` holding only the coordinates that changed, in the same transaction, and
:meth:`SQLiteStore.get_meta` replays them on the whole one in one read. The coordinates come
from the learner (a model update, :meth:`SQLiteStore.stage_model`,
:mod:`liveprofile.learn.tracked`), or, for a large checkpoint handed whole (``model/...`` blobs
of :data:`DELTA_MIN_BYTES` or more), from comparing it with the last one written
(:mod:`liveprofile.learn.ckptdelta`). When the deltas add up to half of the whole checkpoint (or
the model's layout changes, or an update does not follow the one written last) the next commit
writes it whole again and drops them. A store written before deltas existed reads as it is; its
schema version (``PRAGMA user_version``) is raised on the first write, and a store of a newer
version is refused.

>>> import tempfile, pathlib
>>> store = SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "profiles.db")
>>> store.setup()
>>> store.commit({"profile": {"u1": b"x"}}, {"offset": b"1"})
>>> store.read("profile", ["u1", "u2"]), store.count("profile")
([b'x', None], 1)
>>> store.close()
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, cast

from liveprofile.errors import StoreError
from liveprofile.store.base import MODEL_PREFIX, Rows, check_keyset_rows, delta_fits, prefix_end

if TYPE_CHECKING:
    from liveprofile.learn.ckptdelta import Unpacked
    from liveprofile.learn.tracked import ModelUpdate

# ``rows`` is a rowid table: WITHOUT ROWID would keep each value inside the key's b-tree, where
# a value of megabytes (the pending examples, the de-duplication window) can become a divider
# of an interior page, read whole by every seek that compares with it (SQLite's index seek reads
# a cell's overflow to compare keys): a batch of 25,000 item rows then took 15 s instead of 1.
# Stores made before keep their layout and work as they did.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ns, key)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta_delta (
    name TEXT NOT NULL, seq INTEGER NOT NULL, value BLOB NOT NULL, PRIMARY KEY (name, seq)
) WITHOUT ROWID;
"""
_CHUNK = 500  # keys per SELECT ... IN (...), under SQLite's variable limit
_ONE = "SELECT value FROM rows WHERE ns = ? AND key = ?"  # a read of a single key
#: the store's layout version (``PRAGMA user_version``); 0: before model deltas
STORE_SCHEMA = 1
#: model blobs at least this large are written as deltas after a first whole write
DELTA_MIN_BYTES = 65536


class _Written:
    """What this store last wrote of one model: the whole write's token (row 0 of its deltas,
    which tells whether another writer wrote it since), its arrays after the last delta (when
    it was handed whole blobs to compare), or the model update it wrote (tracker ``source``
    and ``number``), how many deltas and how many bytes of them follow the whole write, and
    its size."""

    def __init__(
        self,
        token: bytes,
        state: Unpacked | None,
        size: int,
        source: bytes | None = None,
        number: int = 0,
    ) -> None:
        self.token, self.state, self.size = token, state, size
        self.source, self.number = source, number
        self.deltas, self.delta_bytes = 0, 0

    def then(self, delta: bytes, state: Unpacked | None, number: int) -> _Written:
        """What is known once ``delta`` follows this write."""
        after = _Written(self.token, state, self.size, self.source, number)
        after.deltas, after.delta_bytes = self.deltas + 1, self.delta_bytes + len(delta)
        return after

    def room(self, delta: bytes) -> bool:
        """Whether ``delta`` keeps the deltas within their share of the whole."""
        return delta_fits(self.delta_bytes, self.size, delta)


#: a planned model write: what the store will then know of it, and the delta (None: whole)
_Plan = tuple[_Written, bytes | None]


class SQLiteStore:
    """Rows and blobs in one SQLite database file."""

    #: takes a model as the coordinates a batch changed (:mod:`liveprofile.learn.tracked`)
    writes_model_deltas = True

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._db: sqlite3.Connection | None = None
        self._written: dict[str, _Written] = {}
        self._staged: dict[str, ModelUpdate] = {}

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.setup()
        assert self._db is not None
        return self._db

    def setup(self) -> None:
        if self._db is not None:
            return
        try:
            if self.read_only:
                if not self.path.exists():
                    raise StoreError(
                        f"no store at {self.path}: run 'liveprofile replay' or 'liveprofile "
                        "quickstart' first, or pass --store"
                    )
                db = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, isolation_level=None)
                db.execute("PRAGMA page_size=16384")
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("PRAGMA cache_size=-65536")
                db.executescript(_SCHEMA)
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > STORE_SCHEMA:
                db.close()
                raise StoreError(
                    f"store {self.path} has layout version {version}, this version of "
                    f"liveprofile reads up to {STORE_SCHEMA}: upgrade liveprofile"
                )
            if not self.read_only and version < STORE_SCHEMA:
                db.execute(f"PRAGMA user_version={STORE_SCHEMA}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self._db = db

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        with self._errors("read"):
            return self._read(namespace, keys)

    def _read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if len(keys) == 1:  # a single read (a served profile or score): no batch around it
            row = self.db.execute(_ONE, (namespace, keys[0])).fetchone()
            return [None if row is None else row[0]]
        found: dict[str, bytes] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                self.db.execute(
                    f"SELECT key, value FROM rows WHERE ns = ? AND key IN ({marks})",
                    (namespace, *chunk),
                )
            )
        return [found.get(k) for k in keys]

    def scan(
        self, namespace: str, *, after: str | None = None, limit: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        query, args = "SELECT key, value FROM rows WHERE ns = ?", [namespace]
        if after is not None:
            query, args = query + " AND key > ?", [*args, after]
        query += " ORDER BY key LIMIT ?"
        with self._errors("scan"):
            yield from self.db.execute(query, (*args, -1 if limit is None else limit))

    def keys_under(self, namespace: str, prefixes: Sequence[str]) -> list[list[str]]:
        """One range of the primary key per prefix (keys compare as UTF-8 bytes)."""
        query = "SELECT key FROM rows WHERE ns = ? AND key >= ? AND key < ? ORDER BY key"
        out = []
        with self._errors("read"):
            for prefix in prefixes:
                end = prefix_end(prefix)
                if end is None:
                    found = self.db.execute(
                        "SELECT key FROM rows WHERE ns = ? AND key >= ? ORDER BY key",
                        (namespace, prefix),
                    )
                else:
                    found = self.db.execute(query, (namespace, prefix, end))
                out.append([k for (k,) in found])
        return out

    def count(self, namespace: str) -> int:
        with self._errors("count"):
            query = "SELECT count(*) FROM rows WHERE ns = ?"
            return int(self.db.execute(query, (namespace,)).fetchone()[0])

    def get_meta(self, name: str) -> bytes | None:
        with self._errors("read"):
            if name.startswith(MODEL_PREFIX) and self._has_deltas():
                # one statement: the whole write and its deltas as of one snapshot
                found = self.db.execute(
                    "SELECT -1, value FROM meta WHERE name = ? UNION ALL SELECT seq, value "
                    "FROM meta_delta WHERE name = ? AND seq > 0 ORDER BY 1",
                    (name, name),
                ).fetchall()
                if not found or found[0][0] != -1:
                    return None
                if len(found) == 1:
                    return bytes(found[0][1])
                from liveprofile.learn import ckptdelta  # numpy: only for stores with deltas

                with self._damaged(name):
                    return ckptdelta.replay(found[0][1], (bytes(v) for _, v in found[1:]))
            row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def _has_deltas(self) -> bool:
        """Whether the delta table exists (a store of layout 0 opened read-only has none)."""
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta_delta'"
        return self.db.execute(query).fetchone() is not None

    @contextmanager
    def _damaged(self, name: str) -> Iterator[None]:
        try:
            yield
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise StoreError(f"model {name} in {self.path} is damaged ({exc})") from None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {what} {self.path}: {exc}") from None

    def stage_model(self, name: str, update: ModelUpdate) -> None:
        """Write a model update as blob ``name`` in the next commit (see
        :mod:`liveprofile.learn.tracked`): as a delta when it follows the update this store
        wrote last, else whole."""
        self._staged[name] = update

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        check_keyset_rows(rows)
        db = self.db
        staged, self._staged = self._staged, {}
        blobs: dict[str, bytes | ModelUpdate] = {**staged, **meta}
        try:
            models = {name: v for name, v in blobs.items() if name.startswith(MODEL_PREFIX)}
            plans = {name: self._plan(name, v) for name, v in models.items()}
            db.execute("BEGIN IMMEDIATE")
            for namespace, changes in rows.items():
                db.executemany(
                    "INSERT OR REPLACE INTO rows (ns, key, value) VALUES (?, ?, ?)",
                    sorted((namespace, k, v) for k, v in changes.items() if v is not None),
                )
                db.executemany(
                    "DELETE FROM rows WHERE ns = ? AND key = ?",
                    [(namespace, k) for k, v in changes.items() if v is None],
                )
            after = self._write_meta(blobs, plans)
            db.execute("COMMIT")
        except BaseException as exc:
            self._written.clear()  # what was staged is gone: write whole next time
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot commit to {self.path}: {exc}{_full(exc)}") from None
            raise
        for name in plans:
            self._written.pop(name, None)
        self._written.update(after)

    def _plan(self, name: str, blob: bytes | ModelUpdate) -> _Plan | None:
        """How a model blob will be written: what this store will then know of it and a delta
        (None: a whole write); None when it is a small blob or not a checkpoint of arrays."""
        last = self._written.get(name)
        if not isinstance(blob, bytes | bytearray):  # a model update
            if last is not None:
                delta = blob.delta_after(last.source, last.number, last.delta_bytes, last.size)
                if delta is not None:
                    return last.then(delta, None, blob.number), delta
            return _Written(secrets.token_bytes(8), None, 0, blob.source, blob.number), None
        if len(blob) < DELTA_MIN_BYTES:
            return None
        from liveprofile.learn import ckptdelta  # numpy: only for large models

        state = ckptdelta.unpack(blob)
        if state is None:
            return None
        delta = None if last is None else ckptdelta.diff(last.state, state)
        if last is None or delta is None or not last.room(delta):
            return _Written(secrets.token_bytes(8), state, len(blob)), None
        return last.then(delta, state, 0), delta

    def _write_meta(
        self, meta: Mapping[str, bytes | ModelUpdate], plans: Mapping[str, _Plan | None]
    ) -> dict[str, _Written]:
        """Write the blobs (inside the commit's transaction): a planned delta as a row of
        ``meta_delta``, the rest whole (a model update made whole now); a model written whole
        loses its deltas. Returns what this store then knows of the models it will add deltas
        to."""
        db = self.db
        after: dict[str, _Written] = {}
        whole: list[tuple[str, bytes]] = []
        for name, value in meta.items():
            plan = plans.get(name)
            if plan is not None and plan[1] is not None and self._write_delta(name, *plan):
                after[name] = plan[0]
                continue
            made = getattr(value, "whole", None)  # a model update, else bytes
            blob = cast(bytes, value if made is None else made())
            whole.append((name, blob))
            if name not in plans:
                continue
            db.execute("DELETE FROM meta_delta WHERE name = ?", (name,))
            if plan is not None:
                old = plan[0]  # a whole write (also of a planned delta another writer overtook)
                written = _Written(
                    secrets.token_bytes(8), old.state, len(blob), old.source, old.number
                )
                db.execute(
                    "INSERT INTO meta_delta (name, seq, value) VALUES (?, 0, ?)",
                    (name, written.token),
                )
                after[name] = written
        db.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", whole)
        return after

    def _write_delta(self, name: str, written: _Written, delta: bytes | None) -> bool:
        """Add a delta, if the whole write it follows and its deltas are still the stored
        ones (another writer may have written the model since); False: write it whole."""
        last = self._written[name]
        rows = self.db.execute(
            "SELECT seq, value FROM meta_delta WHERE name = ? AND seq >= 0 ORDER BY seq DESC "
            "LIMIT 1",
            (name,),
        ).fetchall()
        token = self.db.execute(
            "SELECT value FROM meta_delta WHERE name = ? AND seq = 0", (name,)
        ).fetchone()
        if token is None or bytes(token[0]) != last.token or rows[0][0] != last.deltas:
            return False
        self.db.execute(
            "INSERT INTO meta_delta (name, seq, value) VALUES (?, ?, ?)",
            (name, written.deltas, delta),
        )
        return True

    def size_bytes(self) -> int:
        """Bytes on disk, the write-ahead log included."""
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)

    def close(self) -> None:
        if self._db is not None:
            if not self.read_only:
                # fold the write-ahead log back into the database file
                with self._errors("checkpoint"):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None
        self._written.clear()
        self._staged.clear()


def _full(exc: sqlite3.Error) -> str:
    """What SQLite's "database or disk is full" means, with the errno a person searches for."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return (
            " (ENOSPC: no space left on device; free space and run again, nothing of this "
            "batch was committed)"
        )
    return ""

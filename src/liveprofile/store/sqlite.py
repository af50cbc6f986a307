"""The embedded default store: one SQLite file in WAL mode.

A commit is one transaction, so profiles, model checkpoints and the source offset are durable
together or not at all; readers (the CLI, a server) see the last commit while a replay runs.

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
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from liveprofile.errors import StoreError
from liveprofile.store.base import Rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""
_CHUNK = 500  # keys per SELECT ... IN (...), under SQLite's variable limit


class SQLiteStore:
    """Rows and blobs in one SQLite database file."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._db: sqlite3.Connection | None = None

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
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self._db = db

    def read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        with self._errors("read"):
            return self._read(namespace, keys)

    def _read(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
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

    def count(self, namespace: str) -> int:
        with self._errors("count"):
            query = "SELECT count(*) FROM rows WHERE ns = ?"
            return int(self.db.execute(query, (namespace,)).fetchone()[0])

    def get_meta(self, name: str) -> bytes | None:
        with self._errors("read"):
            row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {what} {self.path}: {exc}") from None

    def commit(self, rows: Rows, meta: Mapping[str, bytes]) -> None:
        db = self.db
        try:
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
            db.executemany(
                "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", list(meta.items())
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"cannot commit to {self.path}: {exc}{_full(exc)}") from None

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


def _full(exc: sqlite3.Error) -> str:
    """What SQLite's "database or disk is full" means, with the errno a person searches for."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return (
            " (ENOSPC: no space left on device; free space and run again, nothing of this "
            "batch was committed)"
        )
    return ""

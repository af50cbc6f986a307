"""Where the embedded runner's segment changes go: a JSON Lines file (the Redis workers'
stream of them is :mod:`liveprofile.redis.changes`).

Each change is one JSON object: ``{"segment", "user_id", "change": "enter"|"exit", "ts",
"batch"}``, where ``batch`` is the sequence number of the commit that made it. The file is
written and made durable just before the store commit; on restart, lines of batches the store
never committed are cut off, so a crash neither duplicates nor loses a change.

>>> import tempfile, pathlib
>>> from liveprofile.profile.segments import SegmentChange
>>> path = pathlib.Path(tempfile.mkdtemp()) / "changes.jsonl"
>>> sink = ChangeFile(path)
>>> sink.write([SegmentChange("vip", "u1", "enter", 10.0)], batch=1)
>>> sink.write([SegmentChange("vip", "u2", "enter", 20.0)], batch=2)
>>> sink.recover(committed=1)  # batch 2 never committed
>>> [c["user_id"] for c in read_changes(path)]
['u1']
>>> sink.scrub({"u1"})
1
>>> read_changes(path)
[]
>>> sink.close()
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from liveprofile.errors import StoreError
from liveprofile.events.deadletter import os_reason
from liveprofile.profile.segments import SegmentChange


class _Line(msgspec.Struct):
    segment: str
    user_id: str
    change: str
    ts: float
    batch: int


class ChangeFile:
    """Append-only JSON Lines file of segment changes, cut back to the committed batch."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the life of the sink
        self._encoder = msgspec.json.Encoder()

    def recover(self, committed: int) -> None:
        """Drop the changes of batches after ``committed`` (written, then not committed), and
        a last line cut short (a torn write of a batch that was never committed)."""
        self._fh.flush()
        lines = list(_lines(self.path, torn_ok=True))
        kept = [line for line in lines if line[1].batch <= committed]
        if len(kept) != len(lines) or _torn(self.path):
            self._rewrite(raw for raw, _ in kept)

    def write(self, changes: Sequence[SegmentChange], batch: int) -> None:
        """Append ``changes`` made by commit ``batch`` and make them durable."""
        encode = self._encoder.encode
        try:
            for c in changes:
                self._fh.write(encode(_Line(c.segment, c.user_id, c.change, c.ts, batch)) + b"\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            reason = os_reason(exc)
            raise StoreError(f"cannot write segment changes to {self.path}: {reason}") from exc

    def scrub(self, users: Collection[str]) -> int:
        """Remove every change about ``users`` (privacy erasure); return how many went."""
        self._fh.flush()
        lines = list(_lines(self.path))
        kept = [raw for raw, line in lines if line.user_id not in users]
        if len(kept) != len(lines):
            self._rewrite(kept)
        return len(lines) - len(kept)

    def _rewrite(self, lines: Iterator[bytes] | list[bytes]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as out:
            for raw in lines:
                out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        self._fh.close()
        os.replace(tmp, self.path)
        self._fh = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._fh.close()


def _lines(path: Path, *, torn_ok: bool = False) -> Iterator[tuple[bytes, _Line]]:
    """The lines of a change file; a damaged line other than a torn last one (no line break
    at its end) is a :class:`StoreError` naming it."""
    decoder = msgspec.json.Decoder(_Line)
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                line = decoder.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                if not raw.endswith(b"\n") and (torn_ok or fh.read(1) == b""):
                    return  # the end of a write cut short
                raise StoreError(
                    f"line {number} of the segment-change file {path} is damaged ({exc}): "
                    "move the file away to start a new one"
                ) from None
            yield raw if raw.endswith(b"\n") else raw + b"\n", line


def _torn(path: Path) -> bool:
    """Whether the file ends inside a line."""
    size = path.stat().st_size
    if not size:
        return False
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) != b"\n"


def read_changes(
    path: str | os.PathLike[str], *, segment: str | None = None, user: str | None = None
) -> list[dict[str, Any]]:
    """The changes in a file, oldest first, optionally of one segment or one user."""
    if not Path(path).exists():
        return []
    return [
        msgspec.structs.asdict(line)
        for _, line in _lines(Path(path))
        if (segment is None or line.segment == segment) and (user is None or line.user_id == user)
    ]

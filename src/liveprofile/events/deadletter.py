"""The dead-letter sink: every record that fails validation, with the reason and the raw input.

The file is written before the store commit and its committed length is part of the checkpoint;
on restart it is cut back to that length, so a crash never duplicates or loses a dead letter.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "dead.jsonl"
>>> sink = DeadLetterFile(path)
>>> sink.write([DeadLetter(raw='{"oops"', reason="not valid JSON", source="stdin", offset=0)])
>>> sink.flush()
>>> sink.committed_size() == path.stat().st_size
True
>>> sink.close()
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import msgspec


class DeadLetter(msgspec.Struct, frozen=True):
    """A rejected input record: what it was, why it was rejected and where it came from."""

    raw: str
    reason: str
    source: str
    offset: int


class DeadLetterFile:
    """Append-only JSON Lines file of dead letters that can be cut back to a committed size."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the life of the sink
        self._encoder = msgspec.json.Encoder()

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes: the length recorded at the last commit."""
        self._fh.flush()
        if self.path.stat().st_size > size:
            os.truncate(self.path, size)
        self._fh.seek(0, os.SEEK_END)

    def write(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            self._fh.write(self._encoder.encode(letter) + b"\n")

    def flush(self) -> None:
        """Make everything written so far durable (called before the store commit)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def committed_size(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()


def read_dead_letters(path: str | os.PathLike[str]) -> list[DeadLetter]:
    """All dead letters in a file, oldest first."""
    decoder = msgspec.json.Decoder(DeadLetter)
    with open(path, "rb") as fh:
        return [decoder.decode(line) for line in fh if line.strip()]

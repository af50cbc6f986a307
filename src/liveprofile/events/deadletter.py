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

import errno
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import msgspec

from liveprofile.errors import StoreError

log = logging.getLogger("liveprofile")


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
        """Cut the file back to ``size`` bytes: the length recorded at the last commit. A file
        shorter than that was cut outside liveprofile: say so, and go on after a line break."""
        self._fh.flush()
        actual = self.path.stat().st_size
        if actual > size:
            os.truncate(self.path, size)
        elif actual < size:
            log.warning(
                "%s is %d bytes, shorter than the %d committed: dead letters were lost outside "
                "liveprofile (the damaged last line is listed as such)",
                self.path,
                actual,
                size,
            )
        self._fh.seek(0, os.SEEK_END)
        if actual and actual < size:
            with open(self.path, "rb") as fh:
                fh.seek(actual - 1)
                if fh.read(1) != b"\n":
                    self._fh.write(b"\n")  # new letters start on a line of their own

    def write(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            self._fh.write(self._encoder.encode(letter) + b"\n")

    def flush(self) -> None:
        """Make everything written so far durable (called before the store commit)."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise StoreError(f"cannot write dead letters to {self.path}: {os_reason(exc)}") from exc

    def committed_size(self) -> int:
        return self._fh.tell()

    def close(self) -> None:
        self._fh.close()


def read_dead_letters(path: str | os.PathLike[str]) -> list[DeadLetter]:
    """All dead letters in a file, oldest first. A line that cannot be read (a file cut short
    by hand or by a full disk) is listed as a dead letter of its own, with what it holds.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "dead.jsonl"
    >>> _ = path.write_bytes(b'{"raw": "x", "reason": "r", "source": "s", "offset": 0}\\n{"raw": "y", "rea')
    >>> [d.reason for d in read_dead_letters(path)]
    ['r', 'damaged line 2 of the dead-letter file (cut short?)']
    """  # noqa: E501
    decoder = msgspec.json.Decoder(DeadLetter)
    out: list[DeadLetter] = []
    offset = 0
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(decoder.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    reason = f"damaged line {number} of the dead-letter file (cut short?)"
                    raw = line.decode("utf-8", "replace").rstrip("\n")
                    out.append(DeadLetter(raw, reason, str(path), offset))
            offset += len(line)
    return out


def os_reason(exc: OSError) -> str:
    """An OS error's message with its errno name, so that ENOSPC (a full disk) shows.

    >>> os_reason(OSError(errno.ENOSPC, "No space left on device"))
    'No space left on device (ENOSPC)'
    """
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or str(exc)
    return f"{text} ({name})" if name else text

"""CSV records read defensively: a bad row is reported with its reason, never a crash.

Python's ``csv`` module stops a whole file at the first undecodable byte or oversized field, and
an unbalanced quote makes it swallow the rest of the file as one field. :func:`csv_records` reads
bytes, line by line, and yields each record as its fields or as the reason it is unreadable:

- bytes that are not UTF-8: the line is rejected;
- a quoted field may span lines, but a record stays within :data:`MAX_RECORD` bytes; past that
  the record's first line is rejected as an unbalanced quote and reading goes on after it;
- NUL bytes and other ``csv`` errors reject the record;
- a UTF-8 byte order mark before the header is skipped.

>>> rows = [b'\\xef\\xbb\\xbfa,b\\n', b'1,"x\\n', b'y"\\n', b'2,\\xff\\n', b'3,"open\\n', b'4,z\\n']
>>> for r in csv_records(rows):
...     print(r)
Record(number=0, fields=['a', 'b'], raw='a,b', reason=None)
Record(number=1, fields=['1', 'x\\ny'], raw='1,"x\\ny"', reason=None)
Record(number=2, fields=None, raw='2,\\ufffd', reason='not valid UTF-8: invalid start byte at byte 2')
Record(number=3, fields=None, raw='3,"open', reason='unbalanced quote: the field is still open at the end of the file')
Record(number=4, fields=['4', 'z'], raw='4,z', reason=None)
"""  # noqa: E501

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import NamedTuple

#: the largest record read (a quoted field may span lines up to this many bytes in all)
MAX_RECORD = 64 * 1024
_BOM = b"\xef\xbb\xbf"


class Record(NamedTuple):
    """One record of a CSV file: its fields, or the reason it cannot be read."""

    number: int
    fields: list[str] | None
    raw: str
    reason: str | None


def csv_records(lines: Iterable[bytes], delimiter: str = ",") -> Iterator[Record]:
    """The records of CSV ``lines`` (bytes, as read from a file opened in binary mode)."""
    number = 0
    held: list[bytes] = []  # the lines of a record whose quote is still open
    size = 0
    queue = iter(lines)
    replay: list[bytes] = []
    first = True
    while True:
        if replay:
            line = replay.pop(0)
        else:
            got = next(queue, None)
            if got is None:
                break
            line = got
            if first:
                first = False
                if line.startswith(_BOM):
                    line = line[len(_BOM) :]
        if not held:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Record(number, None, _text(line), f"not valid UTF-8: {exc.reason} at "
                             f"byte {exc.start}")  # fmt: skip
                number += 1
                continue
            if not line.strip(b"\r\n"):
                continue  # blank lines are not records (as in the csv module)
        elif not line.isascii():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                # a bad line inside an open quote: the quote was the mistake
                replay = [*held[1:], line, *replay]
                yield _unbalanced(number, held[0], "a line that is not UTF-8 follows it")
                number += 1
                held, size = [], 0
                continue
        held.append(line)
        size += len(line)
        if sum(part.count(b'"') for part in held) % 2:
            if size > MAX_RECORD:
                replay = [*held[1:], *replay]
                yield _unbalanced(number, held[0], f"the record would exceed {MAX_RECORD} bytes")
                number += 1
                held, size = [], 0
            continue
        record = b"".join(held)
        held, size = [], 0
        yield _parse(number, record, delimiter)
        number += 1
    if held:
        rest = held[1:]
        yield _unbalanced(number, held[0], "the field is still open at the end of the file")
        number += 1
        for again in csv_records(rest, delimiter):  # what the open quote held back
            yield again._replace(number=number)
            number += 1


def _parse(number: int, record: bytes, delimiter: str) -> Record:
    text = record.decode("utf-8").rstrip("\r\n")
    if len(record) > MAX_RECORD:
        return Record(number, None, text[:1000], f"record is {len(record)} bytes, more than "
                      f"the limit of {MAX_RECORD}")  # fmt: skip
    if '"' not in text and "\0" not in text:  # the common case: nothing quoted
        return Record(number, text.split(delimiter), text, None)
    try:
        fields = next(csv.reader([text], delimiter=delimiter, strict=True), [])
    except csv.Error as exc:
        return Record(number, None, text.replace("\0", "\\0"), f"bad CSV record: {exc}")
    return Record(number, fields, text, None)


def _unbalanced(number: int, line: bytes, why: str) -> Record:
    return Record(number, None, _text(line), f"unbalanced quote: {why}")


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace").rstrip("\r\n")[:1000]

"""Event sources: JSON Lines files (or stdin) and CSV files with a column mapping.

A source reads from a committed offset and yields batches of validated events plus the dead
letters of the records that failed; each batch carries the offset to commit with it, so a restart
resumes exactly after the last committed batch.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ratings.csv"
>>> _ = path.write_text("userId,movieId,rating,timestamp\\n1,31,2.5,1260759144\\n1,x,y,z\\n")
>>> source = CsvSource(path, {"user_id": "userId", "item_id": "movieId", "value": "rating",
...                           "ts": "timestamp", "event_id": "{userId}:{movieId}"},
...                    constants={"type": "rate"})
>>> batch = next(source.batches(start=0, size=10))
>>> [e.event_id for e in batch.events], batch.offset
(['1:31'], 2)
>>> batch.dead_letters[0].reason
'Expected `int | float | null`, got `str` - at `$.value`'
"""

from __future__ import annotations

import csv
import os
import string
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from liveprofile.errors import InvalidEvent, SourceError
from liveprofile.events.csvrows import csv_records
from liveprofile.events.deadletter import DeadLetter
from liveprofile.events.schema import Event, EventParser

#: the formats :func:`liveprofile.api.open_source` opens (and ``--format`` accepts)
FORMATS = ("jsonl", "csv", "movielens", "completejourney")


@dataclass
class Batch:
    """Validated events, rejected records, and the offset just after the last record.

    ``positions`` holds each event's own place in the source (a line's byte offset, a row
    number, a stream entry's offset), as a dead letter records it, when the source knows it:
    then it has one entry per event; otherwise it is empty.
    """

    events: Sequence[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offset: int = 0
    #: how far the batch moved the source, in the units of :attr:`Source.total`
    progress: int = 0
    positions: list[int] = field(default_factory=list)

    def add(self, event: Event, position: int | None = None) -> None:
        if not isinstance(self.events, list):
            self.events = list(self.events)
        self.events.append(event)
        if position is not None:
            self.positions.append(position)

    def position(self, k: int) -> int:
        """Where event ``k`` is in the source: its own position when known, else the batch's
        offset."""
        positions = self.positions
        return positions[k] if len(positions) == len(self.events) else self.offset


class Source(Protocol):
    """Where events come from."""

    @property
    def name(self) -> str:
        """A stable name, under which the source's offset is committed."""
        ...

    @property
    def total(self) -> int | None:
        """Size of the whole source in progress units (None when unknown, e.g. stdin)."""
        ...

    @property
    def unit(self) -> str:
        """What the progress units are ("bytes", "rows")."""
        ...

    def batches(self, start: int, size: int) -> Iterator[Batch]:
        """Batches of at most ``size`` records, starting after offset ``start``."""
        ...


class JsonlSource:
    """JSON Lines, one event per line; the offset is a byte position ('-' reads stdin).

    A batch of simple events (see :mod:`liveprofile.events.jsonbatch`) is read at once into
    columns; a batch with any other line is read line by line, with the same events and dead
    letters.
    """

    unit = "bytes"

    def __init__(self, path: str | os.PathLike[str], *, commands: bool = False) -> None:
        self.path = str(path)
        self.stdin = self.path == "-"
        if not self.stdin and not Path(self.path).is_file():
            raise SourceError(f"no such file: {self.path}")
        self.name = "stdin" if self.stdin else f"jsonl:{Path(self.path).resolve()}"
        self.total = None if self.stdin else Path(self.path).stat().st_size
        #: command lines (``$forget``, ``$merge``) are applied only when the operator says so
        self.commands = commands

    def batches(self, start: int, size: int) -> Iterator[Batch]:
        fh: IO[bytes] = sys.stdin.buffer if self.stdin else open(self.path, "rb")  # noqa: SIM115
        try:
            if start and not self.stdin:
                fh.seek(start)
            offset = start if not self.stdin else 0
            parse = EventParser(commands=self.commands).parse_json
            first = offset  # where the batch starts
            texts: list[bytes] = []
            starts: list[int] = []  # each line's own offset
            for line in fh:
                offset += len(line)
                text = line.strip()
                if text:
                    texts.append(text)
                    starts.append(offset - len(line))
                if len(texts) >= size:
                    yield self._batch(parse, texts, starts, first, offset)
                    first, texts, starts = offset, [], []
            if texts or offset != first:
                yield self._batch(parse, texts, starts, first, offset)
        finally:
            if not self.stdin:
                fh.close()

    def _batch(
        self,
        parse: Callable[[bytes], Event],
        texts: list[bytes],
        starts: list[int],
        first: int,
        offset: int,
    ) -> Batch:
        """The batch of lines ``texts`` (at ``starts``), from offset ``first`` to ``offset``."""
        # imported here: numpy is not loaded by the commands that read no events (--help)
        from liveprofile.events import jsonbatch

        columns = jsonbatch.json_columns(texts)  # the common batch: simple events, read at once
        if columns is not None:
            return Batch(columns, offset=offset, progress=offset - first, positions=starts)
        batch = Batch(offset=offset, progress=offset - first)
        for text, at in zip(texts, starts, strict=True):
            try:
                batch.add(parse(text), at)
            except InvalidEvent as exc:
                batch.dead_letters.append(
                    DeadLetter(text.decode("utf-8", "replace"), str(exc), self.name, at)
                )
        return batch


class CsvSource:
    """CSV rows mapped to events; the offset is the number of data rows consumed.

    ``mapping`` maps event fields to column names, or to a template such as
    ``"{userId}:{movieId}"``; ``constants`` sets fields that are not in the file;
    ``item_tags`` gives the tags of each item (e.g. MovieLens genres from movies.csv).
    Without an ``event_id`` mapping the id is the source name and row number.
    """

    unit = "rows"

    def __init__(
        self,
        path: str | os.PathLike[str],
        mapping: Mapping[str, str],
        *,
        constants: Mapping[str, str] | None = None,
        item_tags: Mapping[str, list[str]] | None = None,
        delimiter: str = ",",
        commands: bool = False,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"no such file: {self.path}")
        self.name = f"csv:{self.path.resolve()}"
        self.mapping = dict(mapping)
        self.constants = dict(constants or {})
        self.item_tags = item_tags or {}
        self.delimiter = delimiter
        self.commands = commands
        with open(self.path, "rb") as fh:
            first = next(csv_records(fh, delimiter), None)
            self.total = sum(1 for _ in fh)
        if first is None:
            raise SourceError(f"{self.path} is empty: expected a header row")
        if first.fields is None:
            raise SourceError(f"cannot read the header of {self.path}: {first.reason}")
        header = first.fields
        self.columns = header
        for event_field, column in self.mapping.items():
            needed = _template_columns(column) if "{" in column else [column]
            for name in needed:
                if name not in header:
                    raise SourceError(
                        f"column {name!r} (for {event_field!r}) is not in {self.path.name}; "
                        f"columns are {', '.join(header)}"
                    )

    def _fields(self, row: dict[str, str], number: int) -> dict[str, object]:
        fields: dict[str, object] = dict(self.constants)
        for event_field, column in self.mapping.items():
            value = column.format(**row) if "{" in column else row[column]
            if value != "" or event_field in _REQUIRED:
                fields[event_field] = value
        fields.setdefault("event_id", f"{self.path.name}:{number}")
        item = fields.get("item_id")
        if item is not None and "tags" not in fields:
            tags = self.item_tags.get(str(item))
            if tags:
                fields["tags"] = tags
        return fields

    def batches(self, start: int, size: int) -> Iterator[Batch]:
        parser = EventParser(commands=self.commands)
        header, width = self.columns, len(self.columns)
        with open(self.path, "rb") as fh:
            records = csv_records(fh, self.delimiter)
            next(records, None)  # the header
            batch = Batch(offset=start)
            for record in records:
                number = record.number - 1
                if number < start:
                    continue
                try:
                    if record.fields is None:
                        raise InvalidEvent(str(record.reason))
                    if len(record.fields) != width:
                        raise InvalidEvent(
                            f"row has {len(record.fields)} fields, the header has {width}"
                        )
                    row = dict(zip(header, record.fields, strict=True))
                    batch.add(parser.parse_fields(self._fields(row, number)), number)
                except (InvalidEvent, KeyError, IndexError, ValueError) as exc:
                    reason = str(exc) if isinstance(exc, InvalidEvent) else f"bad row: {exc!r}"
                    batch.dead_letters.append(DeadLetter(record.raw, reason, self.name, number))
                if len(batch.events) + len(batch.dead_letters) >= size:
                    batch.offset = number + 1
                    batch.progress = batch.offset - start
                    start = batch.offset
                    yield batch
                    batch = Batch(offset=start)
            if batch.events or batch.dead_letters:
                batch.offset = start + len(batch.events) + len(batch.dead_letters)
                batch.progress = batch.offset - start
                yield batch


_REQUIRED = frozenset({"event_id", "type", "ts"})


def _template_columns(template: str) -> list[str]:
    """The column names a template such as ``"{userId}:{movieId}"`` refers to."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise SourceError(f"bad template {template!r}: {exc}") from None


def read_item_tags(
    path: str | os.PathLike[str], key: str, column: str, separator: str = "|"
) -> dict[str, list[str]]:
    """Item tags from a CSV file, e.g. MovieLens genres: ``movieId`` -> ``genres`` split on '|'."""
    tags: dict[str, list[str]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if (
            reader.fieldnames is None
            or key not in reader.fieldnames
            or (column not in reader.fieldnames)
        ):
            raise SourceError(f"{path} needs columns {key!r} and {column!r}")
        for row in reader:
            values = [t for t in row[column].split(separator) if t and t != "(no genres listed)"]
            tags[row[key]] = values
    return tags

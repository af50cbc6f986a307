"""A progress bar for replays (rich), fed by the runner's per-batch callback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from liveprofile.events.sources import Batch, Source


@contextmanager
def replay_progress(source: Source) -> Iterator[Callable[[Batch], None]]:
    """Yield a callback that advances a bar by each batch's progress and counts events."""
    with Progress(
        TextColumn("[bold]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(source.unit),
        TextColumn("{task.fields[events]:,} events"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("replay", total=source.total, events=0)
        events = 0

        def advance(batch: Batch) -> None:
            nonlocal events
            events += len(batch.events)
            bar.update(task, advance=batch.progress, events=events)

        yield advance

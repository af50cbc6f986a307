"""The local runner: reads a source batch by batch, runs the core, commits to a store.

Each batch is committed in one store transaction together with the models, the pending examples
and the source offset; dead letters are made durable just before, and the dead-letter file is cut
back to its committed length on start. Killing the process at any point and running it again
gives the same end state as an uninterrupted run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveprofile.config import PipelineConfig
from liveprofile.engine.changes import ChangeFile
from liveprofile.engine.core import Core
from liveprofile.engine.erasure import load_links_to, relinked_ids
from liveprofile.engine.gc_tuning import fewer_collections
from liveprofile.engine.screen import screen
from liveprofile.engine.state import PipelineState
from liveprofile.events.deadletter import DeadLetterFile
from liveprofile.events.sources import Batch, Source
from liveprofile.learn.examples import write_part
from liveprofile.learn.tuned import tuning_of
from liveprofile.profile.segments import SegmentChange
from liveprofile.store.base import Store
from liveprofile.store.layout import ITEMS, PROFILES
from liveprofile.store.lock import writer_lock


@dataclass
class RunStats:
    """What a run did (this run only; the store's totals are in the state summary)."""

    events: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def apply_batch(
    core: Core,
    state: PipelineState,
    store: Store,
    source_name: str,
    batch: Batch,
    stats: RunStats | None = None,
    extra_rows: Mapping[str, dict[str, bytes | None]] | None = None,
    emit: Callable[[Sequence[SegmentChange], set[str]], None] | None = None,
) -> None:
    """Run the core on one batch and commit its state, offset and ``extra_rows`` at once.

    This is the commit logic every runner shares: load the keys the batch needs, step, count the
    batch's dead letters, record ``batch.offset`` under ``source_name``, then write profiles,
    items, pending examples, models and the checkpoint in one :meth:`Store.commit`.
    ``extra_rows`` (e.g. dead letters kept in the store) join the same transaction. ``emit``
    gets the batch's segment changes and erased users just before the commit, to publish the
    changes and remove the erased users' queued ones.
    """
    ckpt = state.checkpoint
    events = batch.events
    state.ensure_aliases(store, core.alias_keys(state, events))
    horizon = core.horizon(state, events)
    if core.ttl is not None:
        state.ensure_expiry(store, horizon, core.ttl)
    users, items = core.required_keys(state, events)
    state.ensure_loaded(store, users, items)
    # erasure and expiry remove every link to their ids, a merge re-points them
    load_links_to(state, store, relinked_ids(state, events, users, core.ttl, horizon))
    result = core.step(state, events)
    ckpt.dead_letters += len(batch.dead_letters)
    ckpt.offsets[source_name] = batch.offset
    rows, meta = state.commit_payload(
        result.users,
        result.items,
        result.pending,
        result.changes,
        deleted=result.deleted,
        links=result.links,
        expiry=result.expiry,
        item_rows=result.item_rows,
        profile_rows=result.profile_rows,
    )
    if extra_rows:
        rows.update(extra_rows)
    if emit is not None and (result.changes or result.erased):
        emit(result.changes, result.erased)
    if result.learned is not None:
        # before the commit, named by its sequence number: a batch replayed after a crash
        # writes its file again, over the same name
        write_part(core.config.run.training_log, ckpt.seq, result.learned)
    store.commit(rows, meta)
    state.compact(rows)
    if stats is not None:
        stats.events += result.applied
        stats.duplicates += result.duplicates
        stats.dead_letters += len(batch.dead_letters)
        stats.batches += 1


class LocalRunner:
    """Replays a source through the core into a store, one committed batch at a time."""

    def __init__(
        self,
        config: PipelineConfig,
        store: Store,
        dead_letters: str | os.PathLike[str],
        *,
        changes: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        #: the wall clock that bounds how far ahead of it event time may be (see ``screen``)
        self.now = now
        self.store = store
        self.core = Core(config)
        store.setup()
        #: one writer per store: a second runner is refused here, before it reads any state
        self.lock = writer_lock(store, "replay")
        try:
            self.state = PipelineState.load(store, config)
        except BaseException:
            self.lock.release()
            raise
        self.dead_letters = DeadLetterFile(dead_letters)
        self.dead_letters.truncate(self.state.checkpoint.dead_letter_bytes)
        #: segment changes (JSON Lines), when segments are declared
        self.changes: ChangeFile | None = None
        if config.segments:
            path = Path(dead_letters).with_suffix(".segments.jsonl") if changes is None else changes
            self.changes = ChangeFile(path)
            self.changes.recover(self.state.checkpoint.seq)
        self._clock = clock

    def run(
        self,
        source: Source,
        *,
        limit: int | None = None,
        on_batch: Callable[[Batch], None] | None = None,
    ) -> RunStats:
        """Process the source from its committed offset to the end (or ``limit`` records)."""
        stats = RunStats()
        ckpt = self.state.checkpoint
        started = self._clock()
        start = ckpt.offsets.get(source.name, 0)
        size = self.config.run.batch_size
        with fewer_collections():
            for batch in source.batches(start, size):
                if limit is not None and stats.events + stats.dead_letters >= limit:
                    break
                self.process(source.name, batch, stats)
                if on_batch is not None:
                    on_batch(batch)
        stats.seconds = self._clock() - started
        return stats

    def process(self, source_name: str, batch: Batch, stats: RunStats | None = None) -> None:
        """Screen, apply and commit one batch."""
        screen(self.core, self.state, self.store, source_name, batch, self.now())
        if batch.dead_letters:
            self.dead_letters.write(batch.dead_letters)
            self.dead_letters.flush()
            self.state.checkpoint.dead_letter_bytes = self.dead_letters.committed_size()
        apply_batch(self.core, self.state, self.store, source_name, batch, stats, emit=self._emit)

    def _emit(self, changes: Sequence[SegmentChange], erased: set[str]) -> None:
        if self.changes is None:
            return
        if erased:
            self.changes.scrub(erased)
        self.changes.write(changes, batch=self.state.checkpoint.seq)

    def summary(self, stats: RunStats) -> dict[str, Any]:
        """The report of a run: this run's counts and speed, the store's totals and metrics."""
        totals = self.state.summary()
        return {
            "events": stats.events,
            "dead_letters": stats.dead_letters,
            "duplicates": stats.duplicates,
            "seconds": round(stats.seconds, 3),
            "events_per_s": round(stats.events_per_s, 1),
            "profiles": self.store.count(PROFILES),
            "items": self.store.count(ITEMS),
            "store_totals": {k: v for k, v in totals.items() if k != "tasks"},
            "segments": {name: len(m) for name, m in sorted(self.state.members.items())},
            "tasks": {
                name: {
                    **task.metrics.summary(),
                    "windows": task.metrics.windows(),
                    "calibration": task.metrics.calibration(),
                    **tuning_of(task.learner),
                }
                for name, task in self.state.tasks.items()
            },
        }

    def close(self) -> None:
        self.dead_letters.close()
        if self.changes is not None:
            self.changes.close()
        self.lock.release()
        self.store.close()

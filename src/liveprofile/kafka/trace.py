"""Per-batch timings of a Kafka worker, for finding where freshness is lost (off by default).

With ``LIVEPROFILE_BATCH_TRACE=FILE`` in its environment (or ``trace=`` given to
:class:`~liveprofile.kafka.worker.KafkaWorker`) a worker appends one JSON line per applied batch
to ``FILE``:

* ``t``: wall-clock time (s) when the batch had committed; ``p``: partition; ``n``: records;
* ``gap_ms``: from the previous batch's commit to this batch's poll (the loop's own work),
  ``poll_ms``: the ``consume()`` call that returned the batch, ``apply_ms``: parse, step and
  commit, ``cpu_ms``: the process's CPU time over the apply;
* ``oldest_ms`` / ``newest_ms``: from the Kafka timestamps of the batch's first and last
  records (the producer's append times) to the commit: how stale the batch's events were
  when they became readable;
* ``gc_ms`` / ``gc_gen``: garbage collections during the poll and the apply (time, highest
  generation; -1: none); ``young``: objects allocated (net) since the last collection, the
  ones the next one walks (it runs when this passes the collector's first threshold);
* ``phases``: wall-clock ms of the step's parts (:data:`PHASES`) within the apply;
* ``wm``: the partition's event-time watermark after the batch (epoch seconds): how far in
  event time each partition had got, to see how far apart partitions are applied (the
  alignment of a shared model, :mod:`liveprofile.kafka.align`); ``end``: the partition's
  offset after the batch's last record.

The Flink job writes the same lines (``liveprofile flink run`` with the variable set, or
``FlinkSettings.trace``), one file for all its Python workers, without ``poll_ms``' meaning (0)
and without ``oldest_ms``/``newest_ms`` (Flink's rows carry no Kafka timestamps).

With the worker's ``overlap`` (the default) a batch's commit is sent in the background: ``t``
and the staleness are taken when it was sent, and it lands by the next batch's first use of the
store (phase ``settle``: the wait for it, in that next batch's apply).

Tracing wraps the methods of :data:`PHASES` for the process's lifetime; it costs two clock
reads per wrapped call and one line per batch. ``benchmarks/batch_trace.py`` summarises a file.

>>> import json, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "trace.jsonl"
>>> trace = BatchTrace(path, phases=())
>>> trace.polled(0.0, 0.25)
>>> trace.applied(3, 100, 0.25, 0.40, 0.1, (1000.0, 1000.1), now=1000.5, watermark=990.0,
...               end=7100)
>>> trace.close()
>>> line = json.loads(path.read_text())
>>> line["p"], line["n"], line["poll_ms"], line["apply_ms"], line["oldest_ms"], line["newest_ms"]
(3, 100, 250.0, 150.0, 500.0, 400.0)
>>> line["wm"], line["end"]
(990.0, 7100)
"""

from __future__ import annotations

import gc
import importlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

#: the environment variable naming the trace file
TRACE_ENV = "LIVEPROFILE_BATCH_TRACE"

#: (label, module, attribute path) of the calls timed within a batch's apply
PHASES: tuple[tuple[str, str, str], ...] = (
    ("load", "liveprofile.engine.state", "PipelineState.ensure_loaded"),
    ("step", "liveprofile.engine.core", "Core.step"),
    ("model", "liveprofile.engine.compiled", "run_ops"),
    ("rows_back", "liveprofile.engine.compiled", "store_users"),
    ("finish", "liveprofile.engine.step", "Step.finish"),
    ("payload", "liveprofile.engine.state", "PipelineState.commit_payload"),
    ("commit", "liveprofile.redis.fence", "FencedRedisStore.commit"),
    ("settle", "liveprofile.redis.fence", "FencedRedisStore.settle"),
    ("compact", "liveprofile.engine.state", "PipelineState.compact"),
)


def trace_path() -> Path | None:
    """The trace file named by the environment (None: tracing off)."""
    value = os.environ.get(TRACE_ENV)
    return Path(value) if value else None


class BatchTrace:
    """Writes one JSON line per batch to ``path`` (see the module's doc)."""

    def __init__(
        self,
        path: Path,
        *,
        phases: Sequence[tuple[str, str, str]] = PHASES,
        clock: Callable[[], float] = time.perf_counter,
        phase_clock: Callable[[], float] | None = None,
    ) -> None:
        self._out: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self._clock = clock
        #: the clock of the phases (default ``clock``; ``time.process_time`` for CPU time)
        self._phase_clock = clock if phase_clock is None else phase_clock
        self.spent: dict[str, float] = {}
        self._gc_began = 0.0
        self.gc_seconds = 0.0
        self.gc_gen = -1
        self._last_end: float | None = None
        self._poll = (0.0, 0.0)
        gc.callbacks.append(self._on_gc)
        self._undo: list[Callable[[], None]] = [lambda: gc.callbacks.remove(self._on_gc)]
        for label, module, attr in phases:
            self._wrap(label, module, attr)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_began = self._clock()
        else:
            self.gc_seconds += self._clock() - self._gc_began
            self.gc_gen = max(self.gc_gen, int(info.get("generation", 0)))

    def _wrap(self, label: str, module: str, attr: str) -> None:
        owner: Any = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = owner.__dict__[name]
        spent, clock = self.spent, self._phase_clock

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = clock()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + clock() - began

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def polled(self, began: float, ended: float) -> None:
        """A ``consume()`` call ran from ``began`` to ``ended`` (the trace's clock)."""
        self._poll = (began, ended)

    def applied(
        self,
        partition: int,
        records: int,
        began: float,
        ended: float,
        cpu: float,
        appended: tuple[float, float] | None,
        now: float | None = None,
        watermark: float | None = None,
        end: int | None = None,
    ) -> None:
        """A batch of ``records`` applied from ``began`` to ``ended`` using ``cpu`` seconds;
        ``appended``: its first and last records' Kafka timestamps (s; None: not known, the
        staleness fields are left out); ``watermark``: the partition's event-time watermark
        after the batch (s); ``end``: the offset after its last record."""
        now = time.time() if now is None else now
        poll_began, poll_ended = self._poll
        gap = 0.0 if self._last_end is None else max(0.0, poll_began - self._last_end)
        row = {
            "t": round(now, 3),
            "p": partition,
            "n": records,
            "gap_ms": _ms(gap),
            "poll_ms": _ms(poll_ended - poll_began),
            "apply_ms": _ms(ended - began),
            "cpu_ms": _ms(cpu),
            "gc_ms": _ms(self.gc_seconds),
            "gc_gen": self.gc_gen,
            "young": gc.get_count()[0],
            "phases": {k: _ms(v) for k, v in self.spent.items()},
        }
        if appended is not None:
            oldest, newest = (t if t > 0 else now for t in appended)  # 0: the broker gave none
            row["oldest_ms"], row["newest_ms"] = _ms(now - oldest), _ms(now - newest)
        if watermark is not None and math.isfinite(watermark):
            row["wm"] = round(watermark, 3)
        if end is not None:
            row["end"] = end
        self._out.write(json.dumps(row) + "\n")
        self._last_end = ended
        self._poll = (ended, ended)  # a second partition of the same poll: no poll of its own
        self.spent.clear()
        self.gc_seconds, self.gc_gen = 0.0, -1

    def close(self) -> None:
        """Restore the wrapped methods and close the file."""
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        self._out.close()


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)

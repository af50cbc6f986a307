"""The pipeline as an Apache Flink job (PyFlink), reading a Kafka topic into the Redis store.

Design:

* **Source.** Flink's Kafka SQL connector reads the topic as raw bytes with the record's
  ``partition`` and ``offset`` (metadata columns). A watermark on event time (the event's
  ``ts`` when it is epoch seconds, else the record's Kafka timestamp) is declared on the
  source, bounded by ``watermark_delay_s`` and with an idle timeout so that quiet partitions do
  not hold it back; Flink shows it per operator. Batches close on processing time, not on the
  watermark: Flink would drop late events, whereas the core decides lateness itself (the
  ``run`` watermark and de-duplication window), exactly as every other runner does.
* **Micro-batches, in Java.** A tumbling processing-time window of ``batch_ms`` per Kafka
  partition collects ``ARRAY_AGG(ROW(offset, value))`` in Flink's own (checkpointed) state.
  Python sees one row per partition and window, never single events: per-record Python in
  PyFlink costs more than the whole core does.
* **Partitioning by user.** The publisher keys records by user, so a user's events lie in one
  partition; the stream is keyed by partition, so one Python subtask owns a partition at a time
  and sees its batches in offset order.
* **The core and the commit.** The Python function applies each batch through
  :func:`liveprofile.kafka.partition.apply_records`, the Kafka worker's own apply path: the same
  per-partition store scopes (``{topic}.{p}``), validation into dead letters (store and
  dead-letter topic), de-duplication, the core, and one fenced ``MULTI``/``EXEC`` that also
  writes the partition's next offset. A store written by Flink and one written by Kafka workers
  are interchangeable.
* **Exactly-once effect.** Flink's checkpoints hold the source offsets and the open windows;
  on a restore (a taskmanager lost, a job restarted) the source rewinds to the checkpoint and
  the windows are restored, so nothing is lost, and the store's per-partition offset is the
  truth about what was applied: a subtask (re)loads a partition's state from the store on its
  first batch and skips every record below the stored offset. A new job starts reading at the
  store's offsets. Kafka's committed offsets (on checkpoints) serve monitoring only.
* **Event-time alignment.** With a shared model, Flink's watermark alignment paces the source,
  and at parallelism 1 the Python side applies the Kafka workers' gate too (:class:`~liveprofile.
  kafka.align.SkewGate`) to whole windows: a partition too far ahead waits in this process's
  memory, a timer looks again every :data:`RELEASE_MS`, and records a restore lost with held
  windows are read again from Kafka (see :meth:`ApplyBatches.apply`).
* **Ranker rounds.** With ``ranker.every``, the subtask that owns partition 0 runs the learned
  ranker's rounds over that partition's committed batches, as a Kafka worker does
  (:mod:`liveprofile.kafka.rounds`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any

from liveprofile.errors import LiveprofileError

log = logging.getLogger("liveprofile")


class FlinkError(LiveprofileError):
    """The Flink job cannot be built, submitted or run."""

    exit_code = 70


@dataclass
class FlinkSettings:
    """What a job reads, where it writes, and how it batches and checkpoints.

    >>> FlinkSettings("127.0.0.1:9092", "shop", "redis://127.0.0.1:6379/0").group
    'shop-flink'
    """

    bootstrap: str
    topic: str
    redis_url: str
    prefix: str = "liveprofile"
    config_toml: str = ""
    batch_ms: int = 200
    parallelism: int = 1
    checkpoint_ms: int = 2000
    watermark_delay_s: int = 5
    group: str = ""
    jars: list[str] = field(default_factory=list)
    python: str = sys.executable
    execution_mode: str = "process"
    #: a file the Python workers append one line per batch to (``kafka.trace``); empty: off.
    #: Taken from ``LIVEPROFILE_BATCH_TRACE`` where the settings are made, since Flink's
    #: Python workers do not see the submitting process's environment
    trace: str = field(default_factory=lambda: os.environ.get("LIVEPROFILE_BATCH_TRACE", ""))

    def __post_init__(self) -> None:
        if not self.group:
            self.group = f"{self.topic}-flink"


class ApplyBatches:
    """The Python side of the job: applies ``(partition, [(offset, value), ...])`` rows."""

    def __init__(self, settings: FlinkSettings) -> None:
        self.settings = settings
        self.owned: dict[int, Any] = {}
        #: each task's shared model as this subtask last read it (``run.shared_model``)
        self.models: dict[str, Any] = {}
        self.store: Any = None
        self.producer: Any = None
        self.rounds: Any = None
        self.trace: Any = None
        #: with a shared model, holds back partitions too far ahead in event time (see
        #: :meth:`apply`); None: no alignment
        self.gate: Any = None
        self.ends: Any = None

    def open(self) -> None:
        _let_numba_import()
        from confluent_kafka import Consumer, Producer

        from liveprofile.config import PipelineConfig
        from liveprofile.engine.local import RunStats
        from liveprofile.events.schema import EventParser
        from liveprofile.kafka.producer import producer_config
        from liveprofile.kafka.rounds import LeadRounds
        from liveprofile.redis.fence import FencedRedisStore

        s = self.settings
        self.config = PipelineConfig.from_toml(s.config_toml)
        self.store = FencedRedisStore(s.redis_url, prefix=s.prefix)
        self.store.setup()
        self.producer = Producer(producer_config(s.bootstrap))
        self.parser = EventParser()
        self.stats = RunStats()
        #: the ranker rounds (``ranker.every``), run by the subtask that owns partition 0
        self.rounds = LeadRounds(self.store, self.config)
        run = self.config.run
        # at parallelism 2 the gate made the subtasks wait for each other's commits window by
        # window (a window of a replay spans days, far more than the bound): 4,083 events/s
        # against 27,720 with Flink's alignment alone (benchmarks/scaleout.py, flink-two)
        if run.partition_skew_s is not None and run.shared_model and s.parallelism == 1:
            from liveprofile.kafka.align import SkewGate

            consumer = Consumer(
                {"bootstrap.servers": s.bootstrap, "group.id": s.group, "logger": log}
            )
            self.ends = TopicEnds(consumer)
            self.gate = SkewGate(
                lambda p: self._committed_many([p])[p],
                s.topic,
                run.partition_skew_s,
                committed_many=self._committed_many,
                max_held=sys.maxsize,  # Flink's source cannot be paused from here
            )
        if s.trace:
            from liveprofile.kafka.trace import BatchTrace

            self.trace = BatchTrace(Path(s.trace))

    def apply(self, partition: int, rows: Sequence[tuple[int, bytes | None]]) -> int:
        """Apply one window's ``(offset, value)`` records of ``partition``, in offset order
        (:func:`window_records`), or hold them while the partition is too far ahead in event
        time, and apply the held windows back within the bound; returns the events applied.

        Flink's watermark alignment knows a partition's event time only from records it has
        read, so a partition whose first records have not arrived yet (a job starting on
        backlogs) does not hold the others back there, and a whole window of a fast replay
        spans far more event time than the bound. Here the bound is the Kafka workers'
        (:class:`~liveprofile.kafka.align.SkewGate`): every partition with records left counts
        with its watermark in the store (and its batch in flight, up to
        ``run.model_staleness``), one not started yet as the earliest. Held windows live in
        this process's memory only; those a restore loses are read again from Kafka when the
        partition's next window comes (:meth:`_filled`)."""
        before = self.stats.events
        gate = self.gate
        if gate is None:
            self._apply(partition, rows)
            return self.stats.events - before
        if partition in gate.held or self._ahead(partition, rows):
            gate.hold(self.ends, partition, list(rows))
        else:
            self._apply(partition, rows)
        self.release()
        return self.stats.events - before

    def _ahead(self, partition: int, rows: Sequence[tuple[int, bytes | None]]) -> bool:
        """Whether ``partition``, with ``rows`` next, is more than the bound ahead of the
        slowest partition with records left (one not started is placed by its first event)."""
        owned = self._owned(partition)
        at = owned.state.watermark
        if at == -math.inf:
            at = self._first_ts(rows)
        now = self._positions()
        now[partition] = (at, now[partition][1])
        return bool(at > self.gate.floor(self.ends, now) + self.gate.skew)

    def release(self) -> int:
        """Apply the held windows back within the bound (the partitions furthest behind
        first), until none is; returns the events applied."""
        before = self.stats.events
        gate = self.gate
        while gate is not None and gate.held:
            ready = gate.ready(self.ends, self._positions())
            if not ready:
                break
            for partition, rows in ready:
                self._apply(partition, rows)
        return self.stats.events - before

    def holding(self) -> bool:
        """Whether some window waits (a timer is to look again)."""
        return self.gate is not None and bool(self.gate.held)

    def _positions(self) -> dict[int, tuple[float, int]]:
        """The partitions' (watermark, next offset in the store) for the gate; one with nothing
        applied yet and a window held is placed by that window's first event, so the partition
        whose events start first starts first (one that has delivered nothing yet, and has
        records left, holds every other back until its first window comes)."""
        from liveprofile.kafka.partition import positions

        out = positions(self.settings.topic, self.owned)
        held = self.gate.held if self.gate is not None else {}
        for p, windows in held.items():
            if p in out and out[p][0] == -math.inf:
                out[p] = (self._first_ts(windows[0]), out[p][1])
        return out

    def _first_ts(self, rows: Sequence[tuple[int, bytes | None]]) -> float:
        """The event time of the first of ``rows`` (-inf when it is not a valid event: the
        window is then taken as it comes)."""
        from liveprofile.errors import InvalidEvent

        try:
            return float(self.parser.parse_json(rows[0][1] or b"").ts) if rows else -math.inf
        except InvalidEvent:
            return -math.inf

    def _committed_many(self, partitions: list[int]) -> dict[int, tuple[float, int]]:
        """Other partitions' (watermark counted for the alignment, next offset in the store)."""
        from liveprofile.kafka.align import progress, progress_reads

        topic = self.settings.topic
        found = self.store.read_many(progress_reads(self.store, topic, partitions))
        return progress(found, topic, partitions, self.config.run.model_staleness_s)

    def _owned(self, partition: int) -> Any:
        """The partition's state, loaded from the store on first use."""
        from liveprofile.kafka.partition import load_partition

        owned = self.owned.get(partition)
        if owned is None:
            owned, _ = load_partition(
                self.store, self.config, self.settings.topic, partition, self.models
            )
            self.owned[partition] = owned
        return owned

    def _filled(
        self, partition: int, owned: Any, rows: Sequence[tuple[int, bytes | None]]
    ) -> Sequence[tuple[int, bytes | None]]:
        """``rows`` preceded by the records between the store's offset and their first, read
        from Kafka: windows held when a restore rewound the source past them."""
        from liveprofile.kafka.partition import source_name

        topic = self.settings.topic
        stored = max(owned.state.checkpoint.offsets.get(source_name(topic, partition), -1), 0)
        if not rows or rows[0][0] <= stored:
            return rows
        missing = read_range(self.settings.bootstrap, topic, partition, stored, rows[0][0])
        log.info("partition %d: %d records read again from Kafka", partition, len(missing))
        return [*missing, *rows]

    def _apply(self, partition: int, rows: Sequence[tuple[int, bytes | None]]) -> None:
        """Apply ``rows`` of ``partition`` now and commit them."""
        from liveprofile.kafka.partition import apply_records
        from liveprofile.redis.fence import FencedOut

        began, cpu = time.perf_counter(), time.process_time()
        for attempt in range(2):
            owned = self._owned(partition)
            start = None if self.gate is None else partial(self.store.announce, owned.view.scope)
            filled = self._filled(partition, owned, rows)
            try:
                batch = apply_records(
                    self.store,
                    self.settings.topic,
                    owned,
                    filled,
                    self.stats,
                    self.parser,
                    self._send_dead,
                    start,
                )
                if batch is not None:
                    scope, seq = owned.view.scope, owned.state.checkpoint.seq
                    self.rounds.committed(partition, scope, seq, batch)
                    if self.trace is not None:
                        spent = time.process_time() - cpu
                        wm = owned.state.checkpoint.watermark
                        ended = time.perf_counter()
                        self.trace.applied(
                            partition,
                            len(filled),
                            began,
                            ended,
                            spent,
                            None,
                            watermark=wm,
                            end=filled[-1][0] + 1,
                        )
                break
            except FencedOut:
                # another subtask owned the partition meanwhile (a restore): reload, skip
                # what it applied, apply the rest
                self.owned.pop(partition, None)
                self.rounds.drop([partition])
                if attempt:
                    raise
            except BaseException:
                self.owned.pop(partition, None)
                raise

    def _send_dead(self, rows: dict[str, bytes | None]) -> None:
        from liveprofile.kafka.producer import dead_letter_topic

        for key, row in rows.items():
            self.producer.produce(dead_letter_topic(self.settings.topic), row, key.encode())
        self.producer.flush(30)

    def close(self) -> None:
        if self.trace is not None:
            self.trace.close()
            self.trace = None
        if self.producer is not None:
            self.producer.flush(30)
        if self.store is not None:
            self.store.close()
        if self.ends is not None:
            self.ends.close()
            self.ends = None
        self.owned.clear()


class TopicEnds:
    """The topic's end offsets for :class:`~liveprofile.kafka.align.SkewGate`, read from the
    broker at most every ``interval`` seconds per partition (a job has no consumer of its own
    to cache them: Flink's source reads the topic). Pausing is Flink's, not done here."""

    def __init__(
        self, consumer: Any, interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.consumer = consumer
        self.interval = interval
        self._clock = clock
        self._ends: dict[int, tuple[float, tuple[int, int]]] = {}

    def get_watermark_offsets(
        self, tp: Any, timeout: float = 10.0, cached: bool = False
    ) -> tuple[int, int]:
        now = self._clock()
        got = self._ends.get(tp.partition)
        if got is None or now - got[0] >= self.interval:
            got = self._ends[tp.partition] = (now, self.consumer.get_watermark_offsets(tp, timeout))
        return got[1]

    def list_topics(self, topic: str, timeout: float = 10.0) -> Any:
        return self.consumer.list_topics(topic, timeout=timeout)

    def pause(self, partitions: list[Any]) -> None:
        pass

    def resume(self, partitions: list[Any]) -> None:
        pass

    def close(self) -> None:
        self.consumer.close()


def read_range(
    bootstrap: str, topic: str, partition: int, start: int, end: int, timeout_s: float = 60.0
) -> list[tuple[int, bytes]]:
    """The ``(offset, value)`` records of ``partition`` from offset ``start`` (the earliest
    kept, when that is later) to ``end`` (excluded), read from Kafka."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-reread",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": log,
        }
    )
    out: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        consumer.assign([TopicPartition(topic, partition, start)])
        while True:
            for msg in consumer.consume(1000, 0.2):
                offset = msg.offset()
                if msg.error() is None and offset is not None and offset < end:
                    out.append((offset, msg.value() or b""))
            if consumer.position([TopicPartition(topic, partition)])[0].offset >= end:
                return out
            if time.monotonic() > deadline:
                raise FlinkError(
                    f"partition {partition} of {topic!r}: offsets {start} to {end} not read "
                    f"within {timeout_s:g} s"
                )
    finally:
        consumer.close()


def _let_numba_import() -> None:
    """PyFlink's Python worker (``beam_sdk_worker_main``, on a cluster's taskmanagers) replaces
    ``builtins.print`` by a method of an object of its own, and numba, when first imported,
    looks ``print`` up in the module that method comes from. Give that module its ``print``."""
    import builtins

    module = sys.modules.get(getattr(builtins.print, "__module__", "builtins") or "builtins")
    if module is not None and not hasattr(module, "print"):
        module.print = builtins.print  # type: ignore[attr-defined]


def partition_offsets(settings: FlinkSettings, timeout_s: float = 30) -> dict[int, tuple[int, int]]:
    """Each partition's next offset in the store (0: none yet) and its end offset in Kafka."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from liveprofile.kafka.partition import source_name
    from liveprofile.kafka.status import _checkpoint
    from liveprofile.redis.fence import FencedRedisStore

    s = settings
    consumer = Consumer({"bootstrap.servers": s.bootstrap, "group.id": s.group, "logger": log})
    store = FencedRedisStore(s.redis_url, prefix=s.prefix)
    try:
        meta = consumer.list_topics(s.topic, timeout=timeout_s)
        if s.topic not in meta.topics or meta.topics[s.topic].error is not None:
            raise FlinkError(f"no topic {s.topic!r} at {s.bootstrap}")
        out = {}
        for p in sorted(meta.topics[s.topic].partitions):
            end = consumer.get_watermark_offsets(TopicPartition(s.topic, p), timeout_s)[1]
            ckpt = _checkpoint(store, s.topic, p)
            stored = None if ckpt is None else ckpt.offsets.get(source_name(s.topic, p))
            out[p] = (stored or 0, end)
        return out
    except KafkaException as exc:
        raise FlinkError(f"cannot read the offsets of {s.topic!r}: {exc}") from None
    finally:
        consumer.close()
        store.close()


def start_offsets(settings: FlinkSettings) -> str:
    """``scan.startup.specific-offsets`` from the store: each partition's next offset."""
    offsets = partition_offsets(settings)
    return ";".join(f"partition:{p},offset:{o}" for p, (o, _) in offsets.items())


def alignment_options(settings: FlinkSettings) -> str:
    """The source's watermark alignment (``run.partition_skew`` with ``run.shared_model``),
    as :mod:`liveprofile.kafka.align` does for the Kafka workers: Flink pauses reading a
    partition (a source split) whose watermark is more than the skew ahead of the slowest
    partition's, so the shared model learns the topic in about event-time order. Partitions
    with nothing left to read go idle (``scan.watermark.idle-timeout``) and hold nobody back.
    A pause takes effect between Kafka fetches, so fetches are kept small
    (:data:`ALIGNED_FETCH_BYTES`).

    >>> alignment_options(FlinkSettings("b:9092", "shop", "redis://r"))
    "'scan.watermark.alignment.group' = 'liveprofile-shop', \
'scan.watermark.alignment.max-drift' = '3600000 ms', \
'scan.watermark.alignment.update-interval' = '200 ms', \
'properties.max.partition.fetch.bytes' = '65536',"
    >>> alignment_options(FlinkSettings("b:9092", "shop", "redis://r",
    ...                                 config_toml="[run]\\npartition_skew = ''"))
    ''
    """
    from liveprofile.config import PipelineConfig

    run = PipelineConfig.from_toml(settings.config_toml).run
    skew = run.partition_skew_s
    if skew is None or not run.shared_model:
        return ""
    return (
        f"'scan.watermark.alignment.group' = 'liveprofile-{settings.topic}', "
        f"'scan.watermark.alignment.max-drift' = '{round(skew * 1000)} ms', "
        f"'scan.watermark.alignment.update-interval' = '{ALIGNMENT_UPDATE_MS} ms', "
        f"'properties.max.partition.fetch.bytes' = '{ALIGNED_FETCH_BYTES}',"
    )


#: how often (ms) a subtask holding windows looks again whether they are back within the bound
RELEASE_MS = 50

#: how often Flink's sources exchange their watermarks for alignment
ALIGNMENT_UPDATE_MS = 200

#: the most bytes one Kafka fetch returns per partition when partitions are aligned: Flink
#: pauses a partition only between fetches, and a fetch's records are all passed on, so
#: Kafka's default (1 MiB: about 21,000 Complete Journey events, three weeks of a partition)
#: let a partition run weeks ahead of the others while replaying
ALIGNED_FETCH_BYTES = 65536


def source_ddl(settings: FlinkSettings, offsets: str) -> str:
    """The Kafka table: raw values, partition and offset, event-time watermark (aligned
    across partitions, see :func:`alignment_options`; event time bounded, see
    :func:`~liveprofile.flink.eventtime.event_time_sql`)."""
    from liveprofile.flink.eventtime import event_time_sql

    s = settings
    startup = (
        f"'scan.startup.mode' = 'specific-offsets', 'scan.startup.specific-offsets' = '{offsets}'"
        if offsets
        else "'scan.startup.mode' = 'earliest-offset'"
    )
    return f"""
    CREATE TEMPORARY TABLE events (
      `partition` INT METADATA VIRTUAL,
      `offset` BIGINT METADATA VIRTUAL,
      `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
      `value` BYTES,
      `ts` AS {event_time_sql(s)},
      `pt` AS PROCTIME(),
      WATERMARK FOR `ts` AS `ts` - INTERVAL '{int(s.watermark_delay_s)}' SECOND
    ) WITH (
      'connector' = 'kafka',
      'topic' = '{s.topic}',
      'properties.bootstrap.servers' = '{s.bootstrap}',
      'properties.group.id' = '{s.group}',
      'properties.commit.offsets.on.checkpoint' = 'true',
      'scan.watermark.idle-timeout' = '1 s',
      {alignment_options(s)}
      'format' = 'raw',
      {startup}
    )"""


#: each partition's records of a window as two arrays of plain values, offsets and values, which
#: reach Python far cheaper than an array of rows (a ``Row`` object per record); neither holds a
#: null (a record without a value comes as an empty one, as the apply path reads it anyway), so
#: they stay aligned whether ``ARRAY_AGG`` skips nulls or not
BATCHES_SQL = """
SELECT `partition`, ARRAY_AGG(`offset`) AS offsets, ARRAY_AGG(COALESCE(`value`, X'')) AS vals
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(pt), INTERVAL '{seconds}' SECOND))
GROUP BY window_start, window_end, `partition`
"""


def window_records(offsets: list[int], values: list[bytes]) -> list[tuple[int, bytes]]:
    """A window's ``(offset, value)`` records in offset order, from :data:`BATCHES_SQL`'s arrays.

    >>> window_records([7, 5, 6], [b"b", b"", b"c"])
    [(5, b''), (6, b'c'), (7, b'b')]
    """
    return sorted(zip(offsets, values, strict=True), key=itemgetter(0))


def build(settings: FlinkSettings) -> Any:
    """The job's execution environment, with the pipeline added to it."""
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.base import Sink
    from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
    from pyflink.java_gateway import get_gateway
    from pyflink.table import StreamTableEnvironment

    s = settings
    conf = Configuration()
    conf.set_string("pipeline.jars", ";".join(Path(j).resolve().as_uri() for j in s.jars))
    conf.set_string("python.executable", s.python)
    conf.set_string("python.client.executable", s.python)
    conf.set_string("python.execution-mode", s.execution_mode)
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", "20")
    conf.set_string("restart-strategy.fixed-delay.delay", "1 s")
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(s.parallelism)
    env.enable_checkpointing(s.checkpoint_ms)
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_ddl(s, start_offsets(s)))
    batches = t_env.sql_query(BATCHES_SQL.format(seconds=f"{s.batch_ms / 1000:.3f}"))

    class _Apply(KeyedProcessFunction):  # type: ignore[misc]
        def open(self, runtime_context: RuntimeContext) -> None:
            self.inner = ApplyBatches(s)
            self.inner.open()

        def process_element(self, value: Any, ctx: Any) -> Iterator[int]:
            yield self.inner.apply(int(value[0]), window_records(value[1], value[2]))
            self._later(ctx)

        def on_timer(self, timestamp: int, ctx: Any) -> Iterator[int]:
            yield self.inner.release()
            self._later(ctx)

        def _later(self, ctx: Any) -> None:
            """While a window is held, look again at the next multiple of
            :data:`RELEASE_MS` (one timer per key and moment, however many windows came)."""
            if self.inner.holding():
                timers = ctx.timer_service()
                now = timers.current_processing_time()
                timers.register_processing_time_timer((now // RELEASE_MS + 1) * RELEASE_MS)

        def close(self) -> None:
            self.inner.close()

    discard = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()
    (
        t_env.to_data_stream(batches)
        .key_by(lambda row: int(row[0]), key_type=Types.INT())
        .process(_Apply(), output_type=Types.INT())
        .name("apply micro-batches to the store")
        .sink_to(Sink(discard))
    )
    return env


def caught_up(settings: FlinkSettings) -> bool:
    """Whether the store's offsets have reached the topic's end on every partition."""
    return all(stored >= end for stored, end in partition_offsets(settings).values())


def submit(settings: FlinkSettings) -> Any:
    """Submit the job to a local mini-cluster; its ``JobClient`` (``get_job_id()``, ``cancel()``).

    A standalone cluster takes jobs through ``flink run`` instead (see
    :meth:`liveprofile.flink.cluster.StandaloneCluster.submit`).
    """
    return build(settings).execute_async(f"liveprofile {settings.topic}")


def settings_json(settings: FlinkSettings) -> str:
    """``settings`` as JSON, for :func:`main` in another process.

    >>> s = FlinkSettings("b:9092", "t", "redis://r")
    >>> FlinkSettings(**json.loads(settings_json(s))) == s
    True
    """
    return json.dumps(dataclasses.asdict(settings))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``flink run -py job.py SETTINGS_JSON``: build the job and execute it."""
    args = sys.argv[1:] if argv is None else argv
    settings = FlinkSettings(**json.loads(args[0]))
    build(settings).execute(f"liveprofile {settings.topic}")


def wait_caught_up(settings: FlinkSettings, status: Callable[[], str], poll_s: float = 0.5) -> None:
    """Wait until the store holds the whole topic; raise if the job (``status()``) ends."""
    while not caught_up(settings):
        state = status()
        if state in ("FAILED", "CANCELED", "FINISHED"):
            raise FlinkError(f"the Flink job ended as {state} before catching up")
        time.sleep(poll_s)


def run(settings: FlinkSettings, *, until_caught_up: bool = False) -> float:
    """Run the job; with ``until_caught_up`` cancel it once the store has the whole topic.

    Returns the seconds from submission to the end.
    """
    started = time.perf_counter()
    if not until_caught_up:
        build(settings).execute(f"liveprofile {settings.topic}")
        return time.perf_counter() - started
    client = submit(settings)
    try:
        wait_caught_up(settings, lambda: str(client.get_job_status().result()))
        return time.perf_counter() - started
    finally:
        client.cancel().result()


if __name__ == "__main__":
    main()

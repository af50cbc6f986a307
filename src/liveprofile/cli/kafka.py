"""Kafka on the command line: ``liveprofile kafka start|stop|status|fetch`` runs a local broker,
and ``publish``, ``worker``, ``status`` and ``collect`` take a ``--kafka HOST:PORT`` mode: their
modules declare the options below and hand over to the functions here when ``--kafka`` is set.

This module imports no other command module, and nothing heavy at import time.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from liveprofile.cli.base import _fail_cleanly, console, lines
from liveprofile.config import PipelineConfig

if TYPE_CHECKING:
    from liveprofile.kafka.sink import KafkaSinkSettings

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_DATA_DIR = os.path.join(".liveprofile", "kafka")


@click.group()
def kafka() -> None:
    """Run a local Apache Kafka broker (KRaft mode: broker and controller in one JVM).

    The first start fetches the broker's jars from Maven Central (needs mvn and a JDK 17+),
    caching them in $LIVEPROFILE_KAFKA_JARS (default ~/.cache/liveprofile/kafka-VERSION), and
    formats the storage under --data-dir.

    \b
    Example:
      liveprofile kafka start --data-dir /var/lib/liveprofile/kafka --port 9092
      liveprofile kafka status --data-dir /var/lib/liveprofile/kafka
      liveprofile kafka stop --data-dir /var/lib/liveprofile/kafka
    """


_data_dir = click.option(
    "--data-dir",
    default=DEFAULT_DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory of the broker's logs, config and pid file.",
)


@kafka.command("start")
@_data_dir
@click.option("--port", default=9092, show_default=True, help="Client port.")
@click.option(
    "--controller-port", type=int, help="KRaft controller port [default: the client port + 1]."
)
@click.option(
    "--partitions", default=4, show_default=True, help="Partitions of auto-created topics."
)
@click.option("--heap-mb", default=512, show_default=True, help="JVM heap of the broker.")
@click.option(
    "--die-with-parent",
    is_flag=True,
    help="Kill the broker when the process that ran this command ends (a test's broker).",
)
@_fail_cleanly
def kafka_start(
    data_dir: str,
    port: int,
    controller_port: int | None,
    partitions: int,
    heap_mb: int,
    die_with_parent: bool,
) -> None:
    """Start the broker in the background and wait until it answers."""
    import time

    from liveprofile.kafka.broker import Broker

    broker = Broker(
        data_dir,
        port=port,
        controller_port=controller_port,
        partitions=partitions,
        heap_mb=heap_mb,
        dies_with=os.getppid() if die_with_parent else None,
    )
    began = time.monotonic()
    pid = broker.start()
    took = time.monotonic() - began
    click.echo(json.dumps({"bootstrap": broker.bootstrap, "pid": pid, "seconds": round(took, 1)}))


@kafka.command("fetch")
@_fail_cleanly
def kafka_fetch() -> None:
    """Fetch the broker's jars from Maven Central now (start does it when they are missing).

    \b
    Example:
      LIVEPROFILE_KAFKA_JARS=/opt/kafka-jars liveprofile kafka fetch
    """
    from liveprofile.kafka.broker import KAFKA_VERSION, resolve_jars

    click.echo(json.dumps({"kafka": KAFKA_VERSION, "jars": str(resolve_jars())}))


@kafka.command("stop")
@_data_dir
@_fail_cleanly
def kafka_stop(data_dir: str) -> None:
    """Stop the broker started with this --data-dir (SIGTERM, then SIGKILL after 30 s)."""
    from liveprofile.kafka.broker import Broker

    click.echo(json.dumps({"stopped": Broker(data_dir).stop()}))


@kafka.command("status")
@_data_dir
def kafka_status_cmd(data_dir: str) -> None:
    """Say whether the broker of this --data-dir runs (exit 1 when it does not)."""
    from liveprofile.kafka.broker import Broker

    pid = Broker(data_dir).pid()
    click.echo(json.dumps({"running": pid is not None, "pid": pid}))
    if pid is None:
        sys.exit(1)


# -- the --kafka mode of publish, worker, status and collect -----------------------------------

_kafka = click.option("--kafka", metavar="HOST:PORT", help="Kafka mode: bootstrap server.")
_topic = click.option("--topic", default="events", show_default=True, help="Kafka mode: topic.")
_topic_partitions = click.option(
    "--topic-partitions",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Kafka mode: partitions of the topic when it is created.",
)


def _stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


#: the options ``publish`` takes for its Kafka mode
publish_options = _stack(
    _kafka,
    _topic,
    _topic_partitions,
    click.option(
        "--validate/--no-validate",
        default=True,
        show_default=True,
        help="Kafka mode: send invalid records to TOPIC.deadletters instead of TOPIC.",
    ),
)
#: the options ``worker`` takes for its Kafka mode
worker_options = _stack(
    _kafka,
    _topic,
    click.option(
        "--max-batch-delay",
        type=click.FloatRange(min=0.001),
        help="Kafka mode: seconds a batch waits to fill before it commits "
        "[default: run.max_batch_delay].",
    ),
)
#: the options ``status`` takes for its Kafka mode
status_options = _stack(_kafka, _topic)
#: the options ``collect`` takes for its Kafka mode
collect_options = _stack(_kafka, _topic, _topic_partitions)


def publish_kafka(file: str, kafka: str, topic: str, topic_partitions: int, validate: bool) -> None:
    """``publish --kafka``: records keyed by user id, idempotent producer, acks=all."""
    from liveprofile.kafka.producer import KafkaPublisher

    # the publisher's warnings (a topic that keeps another partition count) on stderr
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s: %(message)s"
    )
    publisher = KafkaPublisher(kafka, topic, partitions=topic_partitions, validate=validate)
    stats = publisher.extend(lines(file))
    click.echo(
        json.dumps(
            {
                "partitions": publisher.partitions,
                "published": stats.published,
                "dead_letters": stats.dead_letters,
                "per_partition": {str(k): v for k, v in sorted(stats.per_partition.items())},
            }
        )
    )


def worker_kafka(
    config: PipelineConfig,
    kafka: str,
    topic: str,
    group: str,
    redis: tuple[str, str],
    batching: tuple[int | None, float | None],
    idle_exit: int | None,
    consumer: str,
) -> None:
    """``worker --kafka``: one member of consumer group ``group`` on ``topic``, state in Redis
    at ``redis`` (URL, prefix); ``batching`` is (batch size, max batch delay in seconds)."""
    from liveprofile.kafka.worker import KafkaWorker
    from liveprofile.redis.fence import FencedRedisStore

    url, prefix = redis
    batch_size, max_batch_delay = batching
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    delay = max_batch_delay if max_batch_delay is not None else config.run.max_batch_delay_s
    store = FencedRedisStore(url, prefix=prefix)
    runner = KafkaWorker(
        config,
        store,
        kafka,
        topic,
        group,
        batch_size=batch_size or config.run.batch_size,
        max_batch_delay=delay,
        client_id=consumer,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # leave the group cleanly: commit, then revoke
        signal.signal(sig, lambda *_: stop.set())
    try:
        stats = runner.run(max_idle_polls=idle_exit, stop=stop)
    finally:
        store.close()
    click.echo(
        json.dumps(
            {
                "events": stats.events,
                "dead_letters": stats.dead_letters,
                "duplicates": stats.duplicates,
                "batches": stats.batches,
                "seconds": round(stats.seconds, 3),
                **({"ranker": runner.rounds.summary()} if runner.rounds.wanted(config) else {}),
            }
        )
    )


def status_kafka(kafka: str, topic: str, group: str, redis: tuple[str, str], as_json: bool) -> None:
    """``status --kafka``: lag per partition (store and Kafka offsets) and the group's members."""
    from rich.table import Table

    from liveprofile.durations import format_span, format_time
    from liveprofile.kafka.status import kafka_status
    from liveprofile.redis.store import RedisStore

    url, prefix = redis
    store = RedisStore(url, prefix=prefix)
    try:
        result = kafka_status(kafka, topic, group, store)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    spread = result.event_time_spread
    title = f"{topic} / group {group} ({result.state}): lag {result.lag:,}"
    if spread is not None:
        title += f", event time spread {format_span(spread)}"
    table = Table(title=title)
    for column in ("partition", "end", "store offset", "kafka offset", "lag", "events", "dead"):
        table.add_column(column)
    times = Table(title="event time (UTC)")
    for column in ("partition", "committed events reach", "batch in flight reaches"):
        times.add_column(column)
    for p in result.partitions:
        table.add_row(
            *(str(v) for v in (p.partition, p.end_offset, p.store_offset, p.kafka_offset)),
            f"{p.lag:,}",
            f"{p.events:,}",
            f"{p.dead_letters:,}",
        )
        times.add_row(
            str(p.partition),
            "-" if p.watermark is None else format_time(p.watermark),
            "-" if p.in_flight_to is None else format_time(p.in_flight_to),
        )
    console.print(table)
    console.print(times)
    members = Table(title="members")
    for column in ("client id", "host", "partitions"):
        members.add_column(column)
    for m in result.members:
        members.add_row(m.client_id, m.host, ",".join(map(str, m.partitions)) or "-")
    console.print(members)


def kafka_sink(kafka: str, topic: str, topic_partitions: int) -> KafkaSinkSettings:
    """The collector's sink settings for ``collect --kafka``."""
    from liveprofile.kafka.sink import KafkaSinkSettings

    return KafkaSinkSettings(kafka, topic, topic_partitions)

"""Kafka on the command line: ``liveprofile kafka start|stop|status`` runs a local broker, and
``publish``, ``worker`` and ``status`` get a ``--kafka HOST:PORT`` mode (added to the commands
defined elsewhere, so the Redis options stay where they are)."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

# the commands that get a --kafka mode here must be registered first
from liveprofile import cli_http, cli_ops, cli_redis  # noqa: F401
from liveprofile.cli import _fail_cleanly, console, main
from liveprofile.config import PipelineConfig

DEFAULT_DATA_DIR = os.path.join(".liveprofile", "kafka")


@main.group()
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
@_fail_cleanly
def kafka_start(
    data_dir: str, port: int, controller_port: int | None, partitions: int, heap_mb: int
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


# -- a --kafka mode for commands defined elsewhere ------------------------------------------------


def _extend(name: str, options: list[click.Option], handler: Callable[..., None], doc: str) -> None:
    """Add ``options`` to the command ``name``; with ``--kafka`` set, ``handler`` runs instead."""
    command = main.commands[name]
    assert command.callback is not None
    original = command.callback
    mine = {o.name for o in options}

    @functools.wraps(original)
    def callback(**kwargs: Any) -> Any:
        if kwargs.get("kafka") is None:
            return original(**{k: v for k, v in kwargs.items() if k not in mine})
        return handler(**kwargs)

    command.params.extend(options)
    command.callback = callback
    command.help = (command.help or "") + "\n\n" + doc


_kafka = click.Option(["--kafka"], metavar="HOST:PORT", help="Kafka mode: bootstrap server.")
_topic = click.Option(["--topic"], default="events", show_default=True, help="Kafka topic.")


@_fail_cleanly
def _publish_kafka(
    file: str, kafka: str, topic: str, topic_partitions: int, validate: bool, **_: Any
) -> None:
    from liveprofile.cli_redis import _lines
    from liveprofile.kafka.producer import KafkaPublisher

    publisher = KafkaPublisher(kafka, topic, partitions=topic_partitions, validate=validate)
    stats = publisher.extend(_lines(file))
    click.echo(
        json.dumps(
            {
                "published": stats.published,
                "dead_letters": stats.dead_letters,
                "per_partition": {str(k): v for k, v in sorted(stats.per_partition.items())},
            }
        )
    )


_extend(
    "publish",
    [
        _kafka,
        _topic,
        click.Option(
            ["--topic-partitions"],
            type=click.IntRange(min=1),
            default=4,
            show_default=True,
            help="Kafka mode: partitions of the topic when it is created.",
        ),
        click.Option(
            ["--validate/--no-validate"],
            default=True,
            show_default=True,
            help="Kafka mode: send invalid records to TOPIC.deadletters instead of TOPIC.",
        ),
    ],
    _publish_kafka,
    "With --kafka HOST:PORT, records go to --topic keyed by user id (anonymous id when there is "
    "none), so one user's events stay in order in one partition; the producer is idempotent "
    "with acks=all. Records that fail validation go to TOPIC.deadletters with the reason.\n\n"
    "\b\nExample:\n  liveprofile publish events.jsonl --kafka 127.0.0.1:9092 --topic shop",
)


@_fail_cleanly
def _worker_kafka(
    kafka: str,
    topic: str,
    group: str,
    prefix: str,
    url: str,
    config_path: str | None,
    batch_size: int | None,
    idle_exit: int | None,
    max_batch_delay: float | None,
    consumer: str,
    **_: Any,
) -> None:
    from liveprofile.kafka.fence import FencedRedisStore
    from liveprofile.kafka.worker import KafkaWorker

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    config = PipelineConfig.load(config_path)
    delay = max_batch_delay if max_batch_delay is not None else _config_delay(config)
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
            }
        )
    )


def _config_delay(config: PipelineConfig) -> float:
    return config.run.max_batch_delay_s


_extend(
    "worker",
    [
        _kafka,
        _topic,
        click.Option(
            ["--max-batch-delay"],
            type=click.FloatRange(min=0.001),
            help="Kafka mode: seconds a batch waits to fill before it commits "
            "[default: run.max_batch_delay].",
        ),
    ],
    _worker_kafka,
    "With --kafka HOST:PORT, the worker joins consumer group --group on --topic: Kafka assigns "
    "and rebalances partitions (cooperative-sticky). Each partition's state (model, pending "
    "examples, offset) lives in the store under PREFIX and moves with the partition; profiles "
    "are shared. Each batch commits profiles, models, dead letters and the partition's offset "
    "in one transaction; --partitions, --of, --scope and --trim do not apply.\n\n"
    "\b\nExample:\n  liveprofile worker --kafka 127.0.0.1:9092 --topic shop --group shop "
    "--redis redis://127.0.0.1:6379/0 --prefix shop",
)


@_fail_cleanly
def _status_kafka(
    kafka: str, topic: str, group: str, url: str, prefix: str, as_json: bool, **_: Any
) -> None:
    from rich.table import Table

    from liveprofile.kafka.status import kafka_status
    from liveprofile.store.redis import RedisStore

    store = RedisStore(url, prefix=prefix)
    try:
        result = kafka_status(kafka, topic, group, store)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(title=f"{topic} / group {group} ({result.state}): lag {result.lag:,}")
    for column in ("partition", "end", "store offset", "kafka offset", "lag", "events", "dead"):
        table.add_column(column)
    for p in result.partitions:
        table.add_row(
            *(str(v) for v in (p.partition, p.end_offset, p.store_offset, p.kafka_offset)),
            f"{p.lag:,}",
            f"{p.events:,}",
            f"{p.dead_letters:,}",
        )
    console.print(table)
    members = Table(title="members")
    for column in ("client id", "host", "partitions"):
        members.add_column(column)
    for m in result.members:
        members.add_row(m.client_id, m.host, ",".join(map(str, m.partitions)) or "-")
    console.print(members)


_extend(
    "status",
    [_kafka, _topic],
    _status_kafka,
    "With --kafka HOST:PORT, shows the lag of --group on --topic per partition (from the store's "
    "offsets, and Kafka's committed ones), each partition's committed events and dead letters, "
    "and the group's members with their partitions.\n\n"
    "\b\nExample:\n  liveprofile status --kafka 127.0.0.1:9092 --topic shop --group shop "
    "--prefix shop",
)


@_fail_cleanly
def _collect_kafka(
    host: str,
    port: int,
    token: str | None,
    max_body_bytes: int,
    max_batch: int,
    url: str | None,
    store: str | None,
    kafka: str,
    topic: str,
    topic_partitions: int,
    **_: Any,
) -> None:
    import uvicorn

    from liveprofile.errors import ConfigError
    from liveprofile.kafka.sink import KafkaSinkSettings
    from liveprofile.serving.collector import CollectorSettings, create_app

    if not token:
        raise ConfigError(
            "refusing to start without a token: pass --token or set LIVEPROFILE_TOKEN"
        )
    if url is not None or store is not None:
        raise ConfigError("choose one sink: --kafka, --redis or --store")
    sink = KafkaSinkSettings(kafka, topic, topic_partitions)
    settings = CollectorSettings(token, sink, max_body_bytes=max_body_bytes, max_batch=max_batch)
    console.print(f"collecting on http://{host}:{port}/v1/events into Kafka {kafka} topic {topic}")
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_level="info")


_extend(
    "collect",
    [
        _kafka,
        _topic,
        click.Option(
            ["--topic-partitions"],
            type=click.IntRange(min=1),
            default=4,
            show_default=True,
            help="Kafka mode: partitions of the topic when it is created.",
        ),
    ],
    _collect_kafka,
    "With --kafka HOST:PORT, each valid event is appended to --topic (keyed by user, idempotent, "
    "acks=all) before the answer (200); rejected ones go to TOPIC.deadletters.\n\n"
    "\b\nExample:\n  LIVEPROFILE_TOKEN=s3cret liveprofile collect --kafka 127.0.0.1:9092 "
    "--topic shop",
)

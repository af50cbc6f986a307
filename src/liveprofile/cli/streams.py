"""The ``publish`` and ``worker`` commands: the production path on Redis Streams."""

from __future__ import annotations

import functools
import json
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import click

from liveprofile.cli import kafka as kafka_mode
from liveprofile.cli.base import _fail_cleanly, console, lines
from liveprofile.config import PipelineConfig

_redis_option = click.option(
    "--redis",
    "url",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="Redis URL holding the event streams (and, for the worker, the store).",
)
_prefix_option = click.option(
    "--prefix",
    default="liveprofile",
    show_default=True,
    help="Key prefix: streams are PREFIX:events:P, the store's hashes PREFIX:NAMESPACE.",
)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@_redis_option
@_prefix_option
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of partition streams; a user's events always go to the same one.",
)
@kafka_mode.publish_options
@_fail_cleanly
def publish(
    file: str,
    url: str,
    prefix: str,
    partitions: int,
    kafka: str | None,
    topic: str,
    topic_partitions: int,
    validate: bool,
) -> None:
    """Append the JSON Lines events of FILE ('-' for stdin) to Redis partition streams or Kafka.

    Each event goes to PREFIX:events:P with P = crc32(user id) mod PARTITIONS. Lines without a
    readable user go to partition 0, where the worker dead-letters them with the reason.

    With --kafka HOST:PORT, records go to --topic keyed by user id (anonymous id when there is
    none), so one user's events stay in order in one partition; the producer is idempotent with
    acks=all. Records that fail validation go to TOPIC.deadletters with the reason.

    \b
    Examples:
      liveprofile publish events.jsonl --redis redis://127.0.0.1:6379/0 --prefix shop \\
          --partitions 2
      liveprofile publish events.jsonl --kafka 127.0.0.1:9092 --topic shop
    """
    if kafka is not None:
        kafka_mode.publish_kafka(file, kafka, topic, topic_partitions, validate)
        return
    import redis

    from liveprofile.redis.streams import publish as publish_lines

    client = redis.Redis.from_url(url)
    try:
        stats = publish_lines(client, prefix, partitions, lines(file))
    except redis.RedisError as exc:
        console.print(f"[red]error:[/red] cannot publish to {url}: {exc}")
        sys.exit(74)
    finally:
        client.close()
    click.echo(
        json.dumps(
            {
                "published": stats.published,
                "unroutable": stats.unroutable,
                "per_partition": {str(k): v for k, v in sorted(stats.per_partition.items())},
            }
        )
    )


def _partition_list(value: str, total: int) -> list[int]:
    try:
        parts = sorted({int(p) for p in value.split(",") if p.strip()})
    except ValueError:
        raise click.BadParameter(
            f"expected numbers separated by commas, e.g. 0,1; got {value!r}",
            param_hint="--partitions",
        ) from None
    bad = [p for p in parts if not 0 <= p < total]
    if not parts or bad:
        raise click.BadParameter(
            f"partitions must be within 0..{total - 1} (--of {total}), got {value!r}",
            param_hint="--partitions",
        )
    return parts


@dataclass(frozen=True)
class StreamsOptions:
    """The ``worker`` options of its Redis Streams mode, gathered by :func:`_streams_options`."""

    partition_list: str
    total: int
    block_ms: int
    claim_idle_ms: int
    scope: str | None
    trim: bool


def _streams_options(func: Callable[..., None]) -> Callable[..., None]:
    """Hand ``func`` the Redis Streams options as one :class:`StreamsOptions` (``streams``);
    the options themselves are declared where ``--help`` lists them."""
    names = [f.name for f in fields(StreamsOptions)]

    @functools.wraps(func)
    def gathered(**kwargs: Any) -> None:
        options = StreamsOptions(**{name: kwargs.pop(name) for name in names})
        func(**kwargs, streams=options)

    return gathered


@click.command()
@_redis_option
@_prefix_option
@click.option(
    "--partitions",
    "partition_list",
    default="0",
    show_default=True,
    help="Partitions this worker owns, comma separated (e.g. 0,1).",
)
@click.option(
    "--of",
    "total",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Total number of partitions the events were published to.",
)
@click.option(
    "--consumer",
    default=socket.gethostname(),
    show_default="host name",
    help="Consumer name in the group; a restart under another name takes over the entries the "
    "old one left unacknowledged.",
)
@click.option("--group", default="liveprofile", show_default=True, help="Consumer group name.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Pipeline config (TOML); a store keeps the config it was built with.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Entries per commit [default: run.batch_size]."
)
@click.option(
    "--block-ms",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="How long one read waits for new entries.",
)
@click.option(
    "--claim-idle-ms",
    type=click.IntRange(min=1),
    default=30_000,
    show_default=True,
    help="Take over entries another consumer left unacknowledged for this long.",
)
@click.option(
    "--idle-exit",
    type=click.IntRange(min=1),
    help="Stop after this many empty reads in a row (for tests and demos) [default: never].",
)
@click.option(
    "--scope",
    help="Keep this worker's item statistics, pending examples and checkpoint apart from other "
    "workers sharing the prefix (profiles stay shared; with run.shared_model, the default, the "
    "workers train one model per task together); give each worker its own, e.g. its partitions.",
)
@click.option(
    "--trim/--no-trim",
    default=False,
    show_default=True,
    help="Delete stream entries in the commit that applies them, keeping any entry another "
    "consumer group has not read and acknowledged yet.",
)
@click.option(
    "--warm-up",
    is_flag=True,
    help="Compile the step for the config before reading any event (see 'liveprofile "
    "compile'): after a fresh install, a first batch with a login would otherwise stall for "
    "the compilation (about 35 s); with the cache filled it costs under a second.",
)
@kafka_mode.worker_options
@_fail_cleanly
@_streams_options
def worker(
    url: str,
    prefix: str,
    consumer: str,
    group: str,
    config_path: str | None,
    batch_size: int | None,
    idle_exit: int | None,
    kafka: str | None,
    topic: str,
    max_batch_delay: float | None,
    warm_up: bool,
    streams: StreamsOptions,
) -> None:
    """Consume partition streams into the Redis store under PREFIX, exactly once in effect.

    Every batch of entries commits profiles, models, dead letters and the stream offset in one
    transaction, then acknowledges the entries. A killed worker restarted with the same
    --consumer resumes where it stopped; while Redis is unreachable it retries with backoff.

    With --kafka HOST:PORT, the worker joins consumer group --group on --topic: Kafka assigns
    and rebalances partitions (cooperative-sticky). Each partition's state (model, pending
    examples, offset) lives in the store under PREFIX and moves with the partition; profiles
    are shared. Each batch commits profiles, models, dead letters and the partition's offset in
    one transaction; --partitions, --of, --scope and --trim do not apply.

    \b
    Examples:
      liveprofile worker --redis redis://127.0.0.1:6379/0 --prefix shop --partitions 0,1 --of 2
      liveprofile worker --kafka 127.0.0.1:9092 --topic shop --group shop \\
          --redis redis://127.0.0.1:6379/0 --prefix shop
    """
    config = PipelineConfig.load(config_path)
    if warm_up:
        from liveprofile.engine.warmup import warm_up as compile_ahead

        done = compile_ahead(config)
        click.echo(f"step compiled for the config in {done.seconds:.1f} s", err=True)
    if kafka is not None:
        kafka_mode.worker_kafka(
            config,
            kafka,
            topic,
            group,
            (url, prefix),
            (batch_size, max_batch_delay),
            idle_exit,
            consumer,
        )
        return
    import redis

    from liveprofile.redis.fence import FencedRedisStore
    from liveprofile.redis.worker import RedisWorker, WorkerOptions

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    parts = _partition_list(streams.partition_list, streams.total)
    store = FencedRedisStore(url, prefix=prefix)  # fenced commits: scoped shared models
    client = redis.Redis.from_url(url)
    options = WorkerOptions(
        prefix,
        parts,
        group=group,
        consumer=consumer,
        batch_size=batch_size or config.run.batch_size,
        block_ms=streams.block_ms,
        claim_idle_ms=streams.claim_idle_ms,
        trim=streams.trim,
        scope=streams.scope,
    )
    runner = RedisWorker(config, store, client, options)
    try:
        stats = runner.run(max_idle_polls=idle_exit)
    except KeyboardInterrupt:
        return
    finally:
        store.close()
        client.close()
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

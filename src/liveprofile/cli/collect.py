"""The ``collect`` command: the HTTP event collector, in front of Redis or an embedded store."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from liveprofile.cli import kafka as kafka_mode
from liveprofile.cli.base import _fail_cleanly, console
from liveprofile.config import PipelineConfig
from liveprofile.errors import ConfigError

if TYPE_CHECKING:
    from liveprofile.kafka.sink import KafkaSinkSettings


@dataclass(frozen=True)
class CollectOptions:
    """The ``collect`` command's options, as Click parsed them (see the command's help).

    >>> CollectOptions(host="127.0.0.1", port=8080, token="t").url is None
    True
    """

    host: str
    port: int
    token: str | None
    max_body_bytes: int = 1024 * 1024
    max_batch: int = 1000
    url: str | None = None  # --redis
    prefix: str = "liveprofile"
    partitions: int = 1
    store: str | None = None
    config_path: str | None = None
    kafka: str | None = None
    topic: str = "events"
    topic_partitions: int = 4


def _options(func: Callable[[CollectOptions], None]) -> Callable[..., None]:
    """Call ``func`` with the command's options gathered in one :class:`CollectOptions`."""

    def wrapper(**options: Any) -> None:
        func(CollectOptions(**options))

    return functools.update_wrapper(wrapper, func)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--token",
    envvar="LIVEPROFILE_TOKEN",
    show_envvar=True,
    help="Bearer token clients must send (required; prefer the environment variable).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=1024 * 1024,
    show_default=True,
    help="Largest request body accepted; larger ones get 413.",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Most events in one request; more get 413.",
)
@click.option("--redis", "url", help="Redis mode: append events to streams on this Redis URL.")
@click.option(
    "--prefix",
    default="liveprofile",
    show_default=True,
    help="Redis mode: streams are PREFIX:events:P, dead letters PREFIX:deadletters.",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Redis mode: number of partition streams (as for 'liveprofile publish').",
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False),
    help="Embedded mode: apply events to this SQLite store in-process.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Embedded mode: pipeline config (TOML); a store keeps the config it was built with.",
)
@kafka_mode.collect_options
@_fail_cleanly
@_options
def collect(options: CollectOptions) -> None:
    """Serve POST /v1/events: collect events over HTTP into Redis streams or a store.

    The body is one JSON event or a JSON array of them, sent with 'Authorization: Bearer TOKEN'.
    The answer lists how many were accepted and, per rejected event, its index and the reason;
    rejected events also go to the dead-letter sink. GET /healthz (no token) reports whether
    the sink is reachable.

    With --redis, each valid event is appended to PREFIX:events:P before the answer (200), ready
    for 'liveprofile worker'. With --store, events are queued (202) and applied in-process,
    committed every 1,000 events or half a second; the queue is drained on shutdown. With
    --kafka HOST:PORT, each valid event is appended to --topic (keyed by user, idempotent,
    acks=all) before the answer (200); rejected ones go to TOPIC.deadletters.

    \b
    Examples:
      LIVEPROFILE_TOKEN=s3cret liveprofile collect --redis redis://127.0.0.1:6379/0 --prefix shop
      LIVEPROFILE_TOKEN=s3cret liveprofile collect --store profiles.db --port 8080
      LIVEPROFILE_TOKEN=s3cret liveprofile collect --kafka 127.0.0.1:9092 --topic shop
      curl -H 'Authorization: Bearer s3cret' -d @event.json http://127.0.0.1:8080/v1/events
    """
    from liveprofile.redis.sink import RedisSinkSettings
    from liveprofile.serving.collector import CollectorSettings, create_app
    from liveprofile.serving.limits import run_server
    from liveprofile.serving.sinks import EmbeddedSinkSettings

    host, port, token, url, store = (
        options.host, options.port, options.token, options.url, options.store
    )  # fmt: skip
    kafka, topic, config_path = options.kafka, options.topic, options.config_path
    max_body_bytes = options.max_body_bytes
    if not token:
        raise ConfigError(
            "refusing to start without a token: pass --token or set LIVEPROFILE_TOKEN"
        )
    if sum(x is not None for x in (url, store, kafka)) != 1:
        raise ConfigError(
            "choose one sink: --redis URL (Redis mode), --kafka HOST:PORT (Kafka mode) or "
            "--store PATH (embedded)"
        )
    if store is None and config_path is not None:
        raise ConfigError("--config applies to --store only; workers take their own")
    sink: RedisSinkSettings | EmbeddedSinkSettings | KafkaSinkSettings
    if kafka is not None:
        sink = kafka_mode.kafka_sink(kafka, topic, options.topic_partitions)
    elif url is not None:
        sink = RedisSinkSettings(url, options.prefix, options.partitions)
    else:
        sink = EmbeddedSinkSettings(Path(str(store)), PipelineConfig.load(config_path))
    settings = CollectorSettings(
        token, sink, max_body_bytes=max_body_bytes, max_batch=options.max_batch
    )
    where = url or store or f"Kafka {kafka} topic {topic}"
    console.print(f"collecting on http://{host}:{port}/v1/events into {where}")
    run_server(create_app(settings), host, port, max_body_bytes=max_body_bytes)

"""The ``serve`` command: the read API (profiles and scores over HTTP) in front of a store."""

from __future__ import annotations

import click

from liveprofile.cli.base import DEFAULT_STORE, _fail_cleanly, console
from liveprofile.errors import ConfigError


@click.command()
@click.option(
    "--store",
    default=DEFAULT_STORE,
    show_default=True,
    help="Store to read: a file path, sqlite:///path or redis://host:port/db.",
)
@click.option(
    "--read-token",
    envvar="LIVEPROFILE_READ_TOKEN",
    show_envvar=True,
    help="Bearer token clients must send (required; prefer the environment variable).",
)
@click.option(
    "--write-token",
    envvar="LIVEPROFILE_WRITE_TOKEN",
    show_envvar=True,
    help="Bearer token of the write endpoints (DELETE /v1/profiles/{user}); without it they "
    "answer 403. Must differ from the read token.",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Redis stores: partitions of the event streams, for queued erasures [default: count "
    "the streams].",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8081,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--public-metrics",
    is_flag=True,
    help="Serve GET /metrics without the read token (for a Prometheus scraper on a trusted "
    "network); by default it needs the token like the data endpoints.",
)
@_fail_cleanly
def serve(
    store: str,
    read_token: str | None,
    write_token: str | None,
    partitions: int | None,
    host: str,
    port: int,
    public_metrics: bool,
) -> None:
    """Serve profiles and online scores from a store over HTTP (read-only).

    Every endpoint but GET /healthz and the dashboard page needs 'Authorization: Bearer TOKEN':
    the read token, or the write token for DELETE. Profiles are viewed as of the store
    watermark, as 'liveprofile profile' shows them. A store that Kafka workers or the Flink
    job keep per partition is read as one: stats, metrics, the timeline, segments and item
    statistics are added up over its partitions.

    \b
    Endpoints:
      GET  /v1/profiles/{user}          one profile (404 if unknown)
      POST /v1/profiles:batch           {"users": [...]} (at most 1000) in one store read
      GET  /v1/score?user=U&item=I&task=T
                                        the task model's P(y=1) and its top features
      GET  /v1/profiles/{user}/export   everything stored about a user (privacy export)
      DELETE /v1/profiles/{user}        erase a user (write token): profile, segments,
                                        identity links, queued segment changes
      GET  /v1/segments                 segments, their rules, sizes and size history
      GET  /v1/segments/{name}/members?after=&limit=
                                        a page of members (pass 'next' back as 'after')
      GET  /v1/segments/{name}/members.csv
                                        every member as CSV, for a campaign
      GET  /v1/recommendations/{user}?k=10&task=T
                                        top k of the popular items of the user's interests
      POST /v1/recommendations/{user}   {"candidates": [...], "k": 10, "task": T}
      GET  /v1/stats                    counters, live throughput, per-task metrics
      GET  /v1/metrics/timeline         AUC/log loss per window and task, segment sizes
      GET  /dashboard                   the dashboard page (no token; it asks for one,
                                        or open /dashboard#token=TOKEN)
      GET  /metrics                     Prometheus metrics (token unless --public-metrics)
      GET  /healthz                     no token; 503 if the store does not answer
      GET  /openapi.json                the OpenAPI spec

    \b
    Examples:
      LIVEPROFILE_READ_TOKEN=s3cret liveprofile serve --store profiles.db --port 8081
      curl -H 'Authorization: Bearer s3cret' http://127.0.0.1:8081/v1/profiles/ann
    """
    from liveprofile.serving.limits import run_server
    from liveprofile.serving.profiles import ReadSettings, create_read_app
    from liveprofile.store import open_store

    if not read_token:
        raise ConfigError(
            "refusing to start without a read token: pass --read-token or set "
            "LIVEPROFILE_READ_TOKEN"
        )
    settings = ReadSettings(
        store,
        read_token,
        write_token=write_token,
        partitions=partitions,
        public_metrics=public_metrics,
    )
    backend = open_store(store, read_only=True)  # fail here, cleanly, on a missing store
    try:
        backend.setup()
    finally:
        backend.close()
    console.print(f"serving profiles from {store} on http://{host}:{port}/v1/profiles")
    console.print(f"dashboard: http://{host}:{port}/dashboard")
    run_server(create_read_app(settings), host, port)  # 1 MiB bodies, 10 s for the headers

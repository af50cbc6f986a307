"""Flink on the command line: ``liveprofile flink run`` submits the pipeline as a PyFlink job
(see :mod:`liveprofile.flink.job`), ``liveprofile flink fetch`` fetches Flink's Kafka connector.

This module imports no other command module, and nothing heavy at import time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from liveprofile.cli.base import _fail_cleanly


@click.group()
def flink() -> None:
    """Run the pipeline as an Apache Flink job (PyFlink) reading a Kafka topic into Redis.

    Needs the 'flink' extra (pip install 'liveprofile[flink]'), a JDK 17+, and Flink's Kafka
    connector jar, fetched once from Maven Central with mvn into $LIVEPROFILE_FLINK_JARS
    (default ~/.cache/liveprofile/flink-connector-VERSION).

    \b
    Example:
      liveprofile flink fetch
      liveprofile flink run --kafka 127.0.0.1:9092 --topic shop \\
          --redis redis://127.0.0.1:6379/0 --prefix shop --parallelism 2
    """


@flink.command("fetch")
@_fail_cleanly
def flink_fetch() -> None:
    """Fetch Flink's Kafka connector jar from Maven Central now (run does it when missing).

    \b
    Example:
      LIVEPROFILE_FLINK_JARS=/opt/flink-jars liveprofile flink fetch
    """
    from liveprofile.flink.jars import CONNECTOR_VERSION, resolve_connector

    click.echo(json.dumps({"connector": CONNECTOR_VERSION, "jar": str(resolve_connector())}))


@flink.command("run")
@click.option("--kafka", "bootstrap", required=True, help="Kafka bootstrap servers, HOST:PORT.")
@click.option("--topic", required=True, help="The topic of events (keyed by user).")
@click.option(
    "--redis", "url", default="redis://127.0.0.1:6379/0", show_default=True, help="Store URL."
)
@click.option("--prefix", default="liveprofile", show_default=True, help="Store key prefix.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Pipeline config (TOML); a store keeps the config it was built with.",
)
@click.option(
    "--batch-ms", default=200, show_default=True, help="Micro-batch window per partition (ms)."
)
@click.option("--parallelism", default=1, show_default=True, help="Flink parallelism.")
@click.option(
    "--checkpoint-ms", default=2000, show_default=True, help="Flink checkpoint interval (ms)."
)
@click.option(
    "--until-caught-up",
    is_flag=True,
    help="Cancel the job once the store holds the whole topic (a replay); print the seconds.",
)
@_fail_cleanly
def flink_run(
    bootstrap: str,
    topic: str,
    url: str,
    prefix: str,
    config_path: str | None,
    batch_ms: int,
    parallelism: int,
    checkpoint_ms: int,
    until_caught_up: bool,
) -> None:
    """Submit the pipeline as a Flink job on a local mini-cluster and run it.

    Each Kafka partition's records are collected for --batch-ms in Flink's window state and
    applied as one batch through the Kafka worker's apply path: the same store layout,
    per-partition offsets and fence, so a store written by Flink and one written by
    `liveprofile worker --kafka` are interchangeable, and a restarted job applies nothing twice.

    \b
    Example:
      liveprofile flink run --kafka 127.0.0.1:9092 --topic shop --prefix shop --until-caught-up
    """
    from liveprofile.flink.jars import resolve_connector
    from liveprofile.flink.job import FlinkSettings, run

    toml = Path(config_path).read_text() if config_path else ""
    settings = FlinkSettings(
        bootstrap,
        topic,
        url,
        prefix=prefix,
        config_toml=toml,
        batch_ms=batch_ms,
        parallelism=parallelism,
        checkpoint_ms=checkpoint_ms,
        jars=[str(resolve_connector())],
        python=sys.executable,
    )
    seconds = run(settings, until_caught_up=until_caught_up)
    click.echo(json.dumps({"topic": topic, "seconds": round(seconds, 2)}))

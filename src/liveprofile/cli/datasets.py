"""``liveprofile dataset``: write a bundled dataset as the JSON Lines events producers send, with
the pipeline config that goes with it, to publish it to Kafka or Redis Streams or replay it."""

from __future__ import annotations

from pathlib import Path

import click

from liveprofile.cli.base import _fail_cleanly, console


@click.command("dataset")
@click.argument("name", type=click.Choice(["completejourney"]))
@click.option(
    "--out",
    default="completejourney.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="JSON Lines file to write the events to.",
)
@click.option(
    "--config",
    "config_out",
    default="completejourney.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the dataset's pipeline config (TOML, for --config of worker, replay "
    "and flink run).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Write only the first N events.")
@_fail_cleanly
def dataset(name: str, out: str, config_out: str, limit: int | None) -> None:
    """Write the Complete Journey as JSON Lines events, and its pipeline config as TOML.

    The events are the quick start's (one purchase event per transaction line, in time order:
    the household as user, the product as item, its category, its department as a tag, the
    sales value as value), in the input format that publish, collect and replay read. The
    config is the quick start's task, "will this household buy this product category again
    within 14 days", and its traits.

    \b
    Examples:
      liveprofile dataset completejourney --out cj.jsonl --config cj.toml
      liveprofile publish cj.jsonl --kafka 127.0.0.1:9092 --topic cj
    """
    from liveprofile.datasets.completejourney import QUICKSTART_TOML, write_jsonl

    with console.status(f"writing {name} to {out}"):
        written = write_jsonl(out, limit)
    Path(config_out).write_text(QUICKSTART_TOML)
    console.print(f"wrote {written:,} events to {out} and the pipeline config to {config_out}")

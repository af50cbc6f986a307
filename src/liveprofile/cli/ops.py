"""The ``status``, ``redis-dead-letters`` and ``redrive`` commands: operating the Redis path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from liveprofile.cli import kafka as kafka_mode
from liveprofile.cli.base import _fail_cleanly
from liveprofile.cli.streams import _prefix_option, _redis_option
from liveprofile.errors import SourceError

if TYPE_CHECKING:
    from liveprofile.redis.ops import Status


def _print_status(status: Status) -> None:
    out = Console()
    streams = Table(title=f"streams of {status.prefix!r}, group {status.group!r}")
    columns = ("stream", "length", "last entry", "lag", "pending", "per consumer", "committed")
    for column in (*columns, "store lag", "scope"):
        streams.add_column(
            column, justify="right" if "lag" in column or column == "length" else "left"
        )
    for s in status.streams:
        consumers = ", ".join(f"{name}: {n:,}" for name, n in s.pending_per_consumer.items())
        streams.add_row(
            s.stream,
            f"{s.length:,}",
            s.last_entry_id or "-",
            f"{s.lag:,}" if s.group_exists else f"{s.lag:,}*",
            f"{s.pending:,}",
            consumers or "-",
            s.committed_id or "-",
            f"{s.store_lag:,}",
            s.owner or "-",
        )
    if not all(s.group_exists for s in status.streams):
        streams.caption = "* no consumer group yet: no worker has read this stream"
    out.print(streams)
    st = status.store
    store = Table(title="store", show_header=False)
    store.add_row("events applied", f"{st.events:,}")
    store.add_row("duplicates skipped", f"{st.duplicates:,}")
    store.add_row("dead letters (total)", f"{st.dead_letters:,}")
    store.add_row("dead letters stored", f"{st.dead_letters_stored:,}")
    store.add_row("watermark", st.watermark or "-")
    store.add_row("commits", f"{st.checkpoint_seq:,}")
    rate = "-" if st.events_per_s is None else f"{st.events_per_s:,.0f}"
    store.add_row("events/s (sampled)", rate)
    out.print(store)
    _print_workers(out, status)


def _print_workers(out: Console, status: Status) -> None:
    workers = Table(title="workers (live: holding the writer lease)")
    columns = ("scope", "live", "consumer", "process", "partitions", "commits", "events", "dead")
    for column in columns:
        workers.add_column(column)
    for w in status.workers:
        expires = "" if w.lease_expires_ms is None else f" ({w.lease_expires_ms / 1000:.0f} s)"
        workers.add_row(
            w.scope or "-",
            f"yes{expires}" if w.live else "no",
            w.consumer or "-",
            w.process or "-",
            ", ".join(s.rsplit(":", 1)[-1] for s in w.streams) or "-",
            f"{w.commits:,}",
            f"{w.events:,}",
            f"{w.dead_letters:,}",
        )
    out.print(workers)
    if status.tasks:
        tasks = Table(title="tasks (over all scopes)")
        for column in ("task", "examples", "auc", "shared model learned"):
            tasks.add_column(column)
        for name, t in status.tasks.items():
            auc = "-" if t.get("auc") is None else f"{t['auc']:.4f}"
            learned = t.get("shared_model_learned")
            tasks.add_row(name, f"{t['n']:,}", auc, "-" if learned is None else f"{learned:,}")
        out.print(tasks)


@click.command()
@_redis_option
@_prefix_option
@click.option("--group", default="liveprofile", show_default=True, help="Consumer group name.")
@click.option(
    "--sample-seconds",
    type=click.FloatRange(min=0.0),
    default=1.0,
    show_default=True,
    help="Measure throughput over this interval (0: skip).",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="The --scope of each worker sharing the prefix (repeat); their checkpoints add up "
    "[default: every scope that committed].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@kafka_mode.status_options
@_fail_cleanly
def status(
    url: str,
    prefix: str,
    group: str,
    sample_seconds: float,
    scopes: tuple[str, ...],
    as_json: bool,
    kafka: str | None,
    topic: str,
) -> None:
    """Show the partition streams (length, lag, pending), the store's checkpoint and the workers.

    Lag counts the entries the group has not been delivered yet (all of them before a worker
    has created the group); pending counts those delivered but not acknowledged; store lag
    counts the entries after the one the store committed (not applied yet). Each worker (one
    per --scope) is listed with its streams and counters, and as live while it holds its
    writer lease (it expires 15 s after a worker dies); tasks show the metrics over all scopes
    and the examples the shared model learned.

    With --kafka HOST:PORT, shows the lag of --group on --topic per partition (from the store's
    offsets, and Kafka's committed ones), each partition's committed events and dead letters,
    and the group's members with their partitions.

    \b
    Examples:
      liveprofile status --redis redis://127.0.0.1:6379/0 --prefix shop --json
      liveprofile status --kafka 127.0.0.1:9092 --topic shop --group shop --prefix shop
    """
    if kafka is not None:
        kafka_mode.status_kafka(kafka, topic, group, (url, prefix), as_json)
        return
    import redis

    from liveprofile.redis.ops import stream_status
    from liveprofile.redis.store import RedisStore

    store = RedisStore(url, prefix=prefix)
    client = redis.Redis.from_url(url)
    try:
        result = stream_status(
            client, store, prefix, group=group, scopes=scopes, sample_seconds=sample_seconds
        )
    finally:
        store.close()
        client.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_status(result)


@click.command("redis-dead-letters")
@_redis_option
@_prefix_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines instead of a table.")
@click.option(
    "--follow",
    is_flag=True,
    help="Read the PREFIX:deadletters stream instead: the latest, then each new one as it "
    "comes, one a line, until Ctrl-C.",
)
@click.option(
    "--poll", type=click.FloatRange(min=0.01), default=0.5, show_default=True,
    help="With --follow, seconds between reads when there is nothing new.",
)  # fmt: skip
@_fail_cleanly
def redis_dead_letters(
    url: str, prefix: str, limit: int, as_json: bool, follow: bool, poll: float
) -> None:
    """List the dead letters a Redis worker stored under PREFIX, with their reasons.

    The key names the rejected stream entry; pass it to `liveprofile redrive --key`.

    With --follow the command reads the PREFIX:deadletters stream, which the workers and the
    HTTP collector append to, and prints each dead letter once, also after a Redis without
    durable writes lost its last second and the worker made those dead letters again. Its
    "key" is then the entry's key (SOURCE/ENTRY-ID/INDEX), not the redrive key.

    \b
    Examples:
      liveprofile redis-dead-letters --redis redis://127.0.0.1:6379/0 --prefix shop
      liveprofile redis-dead-letters --prefix shop --follow --json
    """
    if follow:
        _follow_dead_letters(url, prefix, limit, as_json, poll)
        return
    from liveprofile.redis.ops import list_dead_letters
    from liveprofile.redis.store import RedisStore
    from liveprofile.store.layout import DEAD_LETTERS

    store = RedisStore(url, prefix=prefix)
    try:
        total = store.count(DEAD_LETTERS)
        letters = list_dead_letters(store, limit)
    finally:
        store.close()
    if as_json:
        for key, letter in letters:
            click.echo(json.dumps({"key": key, "reason": letter.reason, "raw": letter.raw}))
        return
    table = Table(title=f"{total:,} dead letters under {prefix!r}")
    for column in ("key", "reason", "raw"):
        table.add_column(column, overflow="fold")
    for key, letter in letters:
        table.add_row(key, letter.reason, letter.raw[:120])
    Console().print(table)


def _follow_dead_letters(url: str, prefix: str, limit: int, as_json: bool, poll: float) -> None:
    from liveprofile.redis.entrykey import Follower, tail
    from liveprofile.redis.store import RedisStore

    store = RedisStore(url, prefix=prefix)
    try:
        follower = Follower(store.client, f"{prefix}:deadletters")
        for f in tail(follower, limit, lambda _: True, poll):
            if as_json:
                click.echo(json.dumps({k: f.get(k) for k in ("key", "source", "reason", "raw")}))
            else:
                click.echo(f"{f.get('source')}  {f.get('reason')}  {f.get('raw', '')[:120]}")
    except KeyboardInterrupt:
        return
    finally:
        store.close()


@click.command()
@_redis_option
@_prefix_option
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Number of partition streams to publish to [default: the streams that exist].",
)
@click.option(
    "--key",
    "keys",
    multiple=True,
    help="Dead letter to re-drive (repeatable) [default: all stored].",
)
@click.option(
    "--fixed",
    type=click.Path(exists=True, dir_okay=False),
    help="JSON Lines of corrected events, one per --key in order, published instead of raw.",
)
@_fail_cleanly
def redrive(
    url: str, prefix: str, partitions: int | None, keys: tuple[str, ...], fixed: str | None
) -> None:
    """Publish dead letters to the partition streams again, then delete them from the store.

    Without --fixed the raw input is published as it was (for failures that were not the
    event's fault). A dead letter is deleted only after its entry is in the stream.

    \b
    Example:
      liveprofile redrive --redis redis://127.0.0.1:6379/0 --prefix shop \\
          --key shop:events:0:1700000000000-3 --fixed corrected.jsonl
    """
    import redis

    from liveprofile.redis.ops import redrive as redrive_letters
    from liveprofile.redis.store import RedisStore

    lines = None
    if fixed is not None:
        if not Path(fixed).is_file():
            raise SourceError(f"no such file: {fixed}")
        lines = Path(fixed).read_bytes().splitlines()
    store = RedisStore(url, prefix=prefix)
    client = redis.Redis.from_url(url)
    try:
        result = redrive_letters(
            client, store, prefix, partitions, keys=list(keys) or None, fixed=lines
        )
    finally:
        store.close()
        client.close()
    click.echo(
        json.dumps(
            {
                "published": result.published,
                "per_partition": {str(k): v for k, v in sorted(result.per_partition.items())},
                "deleted": len(result.deleted),
            }
        )
    )

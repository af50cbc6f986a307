"""The ``segments`` commands: sizes, members, CSV exports and the change log of segments."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from liveprofile.cli.base import DEFAULT_STORE, _fail_cleanly
from liveprofile.durations import format_time
from liveprofile.store import REDIS_SCHEMES
from liveprofile.store.base import Store

_store_option = click.option(
    "--store",
    default=DEFAULT_STORE,
    show_default=True,
    help="Store to read: a file path, sqlite:///path or redis://host:port/db?prefix=NAME.",
)


@contextmanager
def _reading(store: str) -> Iterator[Store]:
    """The store, opened read-only for one command."""
    from liveprofile.store import open_store

    backend = open_store(store, read_only=True)
    try:
        yield backend
    finally:
        backend.close()


@click.group()
def segments() -> None:
    """Real-time segments: sizes, members, CSV exports and enter/exit changes.

    Segments are declared in the pipeline config as rules over profile fields:

    \b
      [segments]
      big_spenders = "monetary_90d > 200 and days_since_last_purchase < 14"
      dairy_fans = "interest['Dairy'] > 0.5"
    """


@segments.command("list")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_fail_cleanly
def list_segments(store: str, as_json: bool) -> None:
    """Show every declared segment with its rule and member count."""
    from liveprofile.serving.segments import segment_sizes

    with _reading(store) as backend:
        sizes = segment_sizes(backend)
    if as_json:
        click.echo(json.dumps(sizes, indent=2))
        return
    table = Table(title=f"segments in {store}")
    table.add_column("segment")
    table.add_column("members", justify="right")
    table.add_column("rule")
    for name, seg in sizes["segments"].items():
        table.add_row(name, f"{seg['members']:,}", seg["rule"])
    Console().print(table)


@segments.command()
@click.argument("name")
@_store_option
@click.option("--after", help="List members after this user id (the 'next' of a page).")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="Page size."
)
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
@_fail_cleanly
def members(name: str, store: str, after: str | None, limit: int, as_json: bool) -> None:
    """List one page of the members of segment NAME, in user-id order.

    \b
    Example:
      liveprofile segments members big_spenders --store profiles.db --limit 20
    """
    from liveprofile.serving.segments import segment_members

    with _reading(store) as backend:
        page = segment_members(backend, name, after=after, limit=limit)
    if as_json:
        click.echo(json.dumps(page, indent=2))
        return
    table = Table(title=f"segment {name!r}")
    table.add_column("user")
    table.add_column("entered (event time, UTC)")
    for m in page["members"]:
        table.add_row(m["user_id"], format_time(m["entered_at"]))
    if page["next"] is not None:
        table.caption = f"more: --after {page['next']}"
    Console().print(table)


@segments.command()
@click.argument("name")
@_store_option
@click.option(
    "--out",
    "out",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="CSV file to write ('-': standard output).",
)
@_fail_cleanly
def export(name: str, store: str, out: str) -> None:
    """Export every member of segment NAME as CSV, for a campaign.

    Columns: user_id, entered_at, last_seen, lifecycle, frequency, monetary, monetary_90d,
    top_interest (times in epoch seconds of event time).
    """
    from liveprofile.serving.segments import iter_members_csv

    with _reading(store) as backend:
        chunks = iter_members_csv(backend, name)
        if out == "-":
            for chunk in chunks:
                sys.stdout.write(chunk)
            return
        rows = 0
        with open(out, "w", newline="") as fh:
            for chunk in chunks:
                fh.write(chunk)
                rows += chunk.count("\n")
    Console(stderr=True).print(f"wrote {rows - 1:,} members of {name!r} to {out}")


@segments.command()
@_store_option
@click.option("--segment", help="Only changes of this segment.")
@click.option("--user", help="Only changes of this user.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Latest N."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines instead of a table.")
@click.option(
    "--follow",
    is_flag=True,
    help="Then print each new change as it comes, one a line, until Ctrl-C (a Redis store).",
)
@click.option(
    "--poll", type=click.FloatRange(min=0.01), default=0.5, show_default=True,
    help="With --follow, seconds between reads when there is nothing new.",
)  # fmt: skip
@_fail_cleanly
def changes(
    store: str,
    segment: str | None,
    user: str | None,
    limit: int,
    as_json: bool,
    follow: bool,
    poll: float,
) -> None:
    """Show the latest segment enters and exits.

    They come from the JSON Lines file beside an embedded store (STORE.segments.jsonl) or from
    the PREFIX:segment-changes stream of a Redis store, which applications can also consume.

    With --follow (a Redis store only) the command keeps reading the stream and prints each
    change once, also after a Redis without durable writes lost its last second and the worker
    made those changes again (the keys of liveprofile.redis.entrykey).

    \b
    Example:
      liveprofile segments changes --store 'redis://127.0.0.1:6379/0?prefix=shop' --follow
    """
    if follow:
        if not store.startswith(REDIS_SCHEMES):
            raise click.UsageError("--follow reads the change stream of a Redis store (redis://)")
        _follow(store, segment, user, limit, as_json, poll)
        return
    found: list[dict[str, Any]]
    if store.startswith(REDIS_SCHEMES):
        from liveprofile.redis.changes import change_stream, read_stream_changes
        from liveprofile.redis.store import RedisStore

        backend = RedisStore(store)
        try:
            stream = change_stream(backend.prefix)
            found = [
                c
                for _, c in read_stream_changes(backend.client, stream, user=user)
                if segment is None or c["segment"] == segment
            ]
        finally:
            backend.close()
    else:
        from liveprofile.engine.changes import read_changes
        from liveprofile.store.layout import default_changes

        found = read_changes(default_changes(store), segment=segment, user=user)
    found = found[-limit:]
    if as_json:
        for c in found:
            click.echo(json.dumps(c))
        return
    table = Table(title=f"{len(found):,} latest segment changes in {store}")
    for column in ("event time (UTC)", "segment", "user", "change"):
        table.add_column(column)
    for c in found:
        table.add_row(format_time(c["ts"]), c["segment"], c["user_id"], c["change"])
    Console().print(table)


def _follow(
    store: str, segment: str | None, user: str | None, limit: int, as_json: bool, poll: float
) -> None:
    from liveprofile.redis.changes import change_stream
    from liveprofile.redis.entrykey import Follower, tail
    from liveprofile.redis.store import RedisStore

    def keep(c: dict[str, str]) -> bool:
        return (segment is None or c["segment"] == segment) and (
            user is None or c["user_id"] == user
        )

    backend = RedisStore(store)
    try:
        for c in tail(Follower(backend.client, change_stream(backend.prefix)), limit, keep, poll):
            change: dict[str, Any] = {**c, "ts": float(c["ts"])}
            if as_json:
                click.echo(json.dumps(change))
            else:
                click.echo(
                    f"{format_time(change['ts'])}  {c['segment']}  {c['user_id']}  {c['change']}"
                )
    except KeyboardInterrupt:
        return
    finally:
        backend.close()

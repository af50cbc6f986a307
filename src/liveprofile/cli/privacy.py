"""The ``privacy`` commands: export everything stored about a user, and erase users."""

from __future__ import annotations

import json

import click

from liveprofile.cli.base import DEFAULT_STORE, _fail_cleanly

_store_option = click.option(
    "--store",
    default=DEFAULT_STORE,
    show_default=True,
    help="Store: a file path, sqlite:///path or redis://host:port/db?prefix=NAME.",
)


@click.group()
def privacy() -> None:
    """Privacy requests: export a user's data, erase users."""


@privacy.command()
@click.argument("user")
@_store_option
@_fail_cleanly
def export(user: str, store: str) -> None:
    """Print everything stored about USER as JSON: the profile (readable and as stored),
    segment memberships, identity links and the segment changes about the user."""
    from liveprofile.privacy import export_user

    click.echo(json.dumps(export_user(store, user), indent=2, default=str))


@privacy.command()
@click.argument("users", nargs=-1, required=True)
@_store_option
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Redis stores: partitions of the event streams [default: count the streams].",
)
@_fail_cleanly
def delete(users: tuple[str, ...], store: str, partitions: int | None) -> None:
    """Erase USERS: profile, segment memberships, identity links and queued segment changes.

    On an embedded store the erasure is applied at once (do not run it while a replay writes
    to the same store). On Redis it is queued to each user's partition stream as a "$forget"
    command event, which the worker applies in order with the user's events.

    \b
    Examples:
      liveprofile privacy delete u42 --store profiles.db
      liveprofile privacy delete u42 --store 'redis://127.0.0.1:6379/0?prefix=shop'
    """
    from liveprofile.privacy import erase

    click.echo(json.dumps(erase(store, list(users), partitions=partitions)))

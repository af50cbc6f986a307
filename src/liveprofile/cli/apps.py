"""Commands for applications built on the profiles and models: ``recommend``."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from liveprofile.cli.base import DEFAULT_STORE, _fail_cleanly
from liveprofile.serving import MAX_CANDIDATES


@click.command()
@click.argument("user")
@click.option(
    "--store",
    default=DEFAULT_STORE,
    show_default=True,
    help="Store to read: a file path, sqlite:///path or redis://host:port/db.",
)
@click.option("-k", "k", type=click.IntRange(1, MAX_CANDIDATES), default=10, show_default=True)
@click.option(
    "--candidates",
    help="Comma-separated item ids to rank (default: popular items of the user's interests).",
)
@click.option("--task", help="Task whose model ranks (default: the first item task with data).")
@click.option("--top", default=3, show_default=True, help="Features shown as each reason.")
@click.option(
    "--rank",
    type=click.Choice(["learned", "blend", "model"]),
    default="learned",
    show_default=True,
    help="learned: the model's P(y=1), popularity, interest and the user's history of the item "
    "weighed as the store's ranker learned from what users bought next (the blend's weights "
    "until it has learned); blend: P(y=1) x popularity x interest x history; "
    "model: P(y=1) alone.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (for scripts).")
@_fail_cleanly
def recommend(
    user: str,
    store: str,
    k: int,
    candidates: str | None,
    task: str | None,
    top: int,
    rank: str,
    as_json: bool,
) -> None:
    """Show the top K items for USER, ranked by a task's online model with the live profile,
    blended with how likely the user is to come across each item (see --rank).

    Each item comes with P(y=1) and the features that contributed most to it (weight x value,
    positive pushes the score up).

    \b
    Examples:
      liveprofile recommend u00042 --store shop.db
      liveprofile recommend u00042 --store shop.db -k 3 --candidates i00001,i00007,i00042
    """
    from liveprofile import api

    items = None if candidates is None else [c.strip() for c in candidates.split(",") if c.strip()]
    out = api.recommend(store, user, k=k, candidates=items, task=task, top=top, rank=rank)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    source = {"request": "given candidates", "interests": "popular in the user's interests"}
    title = (
        f"top {len(out['items'])} for {user} by task {out['task']} "
        f"(of {out['considered']} {source.get(out['candidates'], 'popular items')})"
    )
    table = Table(title=title)
    for column, justify in (("item", "left"), ("category", "left"), ("score", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("reason", overflow="fold")
    for r in out["items"]:
        reason = ", ".join(name if c is None else f"{name} {c:+.2f}" for name, c in r["reason"])
        table.add_row(r["item"], r["category"] or "-", f"{r['score']:.4f}", reason)
    Console().print(table)

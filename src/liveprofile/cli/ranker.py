"""The ``ranker`` command group: teach a store's learned ranker, and show what it learned."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from liveprofile.cli.base import DEFAULT_STORE, _fail_cleanly, console
from liveprofile.durations import parse_duration
from liveprofile.errors import ConfigError

if TYPE_CHECKING:
    from liveprofile.store.base import Store

_store_option = click.option(
    "--store",
    default=DEFAULT_STORE,
    show_default=True,
    help="Store: a file path, sqlite:///path or redis://host:port/db?prefix=NAME (a store kept "
    "per Kafka partition too: its one ranker per task is shared by every partition).",
)


@contextmanager
def _opened(url: str, read_only: bool) -> Iterator[Store]:
    """The store read as one (partitions merged), for one command."""
    from liveprofile.serving.partitions import PartitionedView
    from liveprofile.store import open_store

    view = PartitionedView(open_store(url, read_only=read_only))
    try:
        yield view
    finally:
        view.close()


@click.group()
def ranker() -> None:
    """The learned ranker that orders recommendations: train it, show it.

    Recommendations are ordered by weights over the task model's P(y=1), popularity, the
    user's interest and history (and a few more features), learned pairwise from what users
    bought next. A replay learns them itself every `ranker.every` of event time (config
    section [ranker]); `ranker train` teaches a store's ranker from a file of later purchases.
    """


@ranker.command("train")
@click.argument("purchases", type=click.Path(exists=True, dir_okay=False))
@_store_option
@click.option("--format", "fmt", help="Format of PURCHASES (default: from the file extension).")
@click.option("--task", help="Task whose recommendations are ranked (default: first item task).")
@click.option(
    "--within",
    default="14d",
    show_default=True,
    help="Purchases count from the store's latest event time for this long.",
)
@click.option(
    "--users",
    type=click.IntRange(1),
    default=None,
    help="Learn from at most this many buyers (a seeded sample; default: all).",
)
@click.option("--kind", "kinds", multiple=True, help="Event types that count as buying [purchase].")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar over users.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (for scripts).")
@_fail_cleanly
def train(
    purchases: str,
    store: str,
    fmt: str | None,
    task: str | None,
    within: str,
    users: int | None,
    kinds: tuple[str, ...],
    progress: bool,
    as_json: bool,
) -> None:
    """Teach the store's ranker what users bought next: one round over PURCHASES, events that
    came after the store's latest event time.

    Each buyer's candidates are ranked as the store serves them now, scored against what they
    bought within --within after the store's latest event (hit rate and NDCG at 10, before
    learning: prequential), then learned from; the ranker is saved in the store, where
    `recommend`, the read API and the dashboard read it. Run it on a store that stops where
    the purchases start (a replay of history up to a day, a copy of a live store): features of
    a store that already holds the purchases would give them away. A live pipeline learns its
    ranker itself (config [ranker] every).

    \b
    Examples:
      liveprofile replay history.jsonl --store shop.db
      liveprofile ranker train next-two-weeks.jsonl --store shop.db
      liveprofile ranker train next.jsonl --store redis://127.0.0.1:6379/0?prefix=shop
    """
    from liveprofile import api
    from liveprofile.serving.ranklearn import learn_round
    from liveprofile.serving.ranktrain import purchases_in, sample_users
    from liveprofile.serving.recommend import Recommender
    from liveprofile.store.layout import read_checkpoint

    span = parse_duration(within)
    if span <= 0:
        raise ConfigError("--within must be positive, e.g. '14d'")
    with _opened(store, read_only=False) as view:
        start = read_checkpoint(view).watermark
        source = api.open_source(purchases, fmt)
        events = (e for batch in source.batches(0, 10_000) for e in batch.events)
        bought = purchases_in(events, start, start + span, kinds or ("purchase",))
        chosen = sample_users(bought, users)
        rec = Recommender(view)
        if progress and not as_json:
            from rich.progress import Progress

            with Progress(console=console, transient=True) as bar:
                job = bar.add_task("ranker round", total=len(chosen))
                out = learn_round(rec, bought, chosen, task, on_user=lambda: bar.advance(job))
        else:
            out = learn_round(rec, bought, chosen, task)
    out["buyers"] = len(bought)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    console.print(
        f"ranker of task {out['task']}: learned from {out['users']} of {len(bought)} buyers "
        f"({out['pairs']} pairs); before learning: hit rate@10 {out['hit_rate']:.3f}, "
        f"NDCG@10 {out['ndcg']:.3f}"
    )
    click.echo(json.dumps(out["weights"], indent=2))


@ranker.command("show")
@_store_option
@click.option("--task", help="Task whose ranker is shown (default: the first item task).")
@_fail_cleanly
def show(store: str, task: str | None) -> None:
    """Print a store's learned ranker as JSON: the weight of each feature, the users and pairs
    it learned from (none yet: the blend's starting weights).

    \b
    Example:
      liveprofile ranker show --store shop.db
    """
    from liveprofile.serving.learned import load_ranker
    from liveprofile.serving.recommend import Recommender
    from liveprofile.store.layout import read_checkpoint

    with _opened(store, read_only=True) as view:
        name = task or Recommender(view).default_task(read_checkpoint(view).seq).name
        learned = load_ranker(view, name)
    state = learned.state
    out = {"task": name, "users": state.users, "pairs": state.pairs, "weights": learned.weights}
    click.echo(json.dumps(out, indent=2))

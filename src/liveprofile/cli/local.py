"""Commands of the embedded path: ``quickstart``, ``replay``, ``warm-start``, ``profile``,
``generate``, ``dead-letters`` and ``compile``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import msgspec
from rich.console import Console
from rich.table import Table

from liveprofile.cli.base import DEFAULT_STORE, _fail_cleanly, console
from liveprofile.config import PipelineConfig
from liveprofile.events.sources import FORMATS

if TYPE_CHECKING:
    from liveprofile.events.sources import Source

F = TypeVar("F", bound=Callable[..., Any])


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected FIELD=VALUE, got {value!r}", param_hint=option)
        out[key] = rest
    return out


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="replay summary", show_header=False)
    table.add_row("events applied", f"{summary['events']:,}")
    table.add_row("dead letters", f"{summary['dead_letters']:,}")
    table.add_row("duplicates skipped", f"{summary['duplicates']:,}")
    table.add_row("events/s (end to end)", f"{summary['events_per_s']:,.0f}")
    table.add_row("profiles in store", f"{summary['profiles']:,}")
    table.add_row("store", str(summary.get("store", "-")))
    table.add_row("dead-letter file", str(summary.get("dead_letter_file", "-")))
    console.print(table)
    tasks = Table(title="prequential metrics per task")
    for column in ("task", "examples", "positive rate", "AUC", "log loss", "drifts"):
        tasks.add_column(column)
    for name, t in summary["tasks"].items():
        if t["n"] and "mae" not in t:  # regression tasks: see below
            tasks.add_row(
                name,
                f"{t['n']:,}",
                f"{t['positive_rate']:.3f}",
                f"{t['auc']:.4f}" if t["auc"] is not None else "n/a",
                f"{t['logloss']:.4f}",
                str(t["drift"]["detections"]),
            )
    console.print(tasks)
    values = {name: t for name, t in summary["tasks"].items() if t["n"] and "mae" in t}
    if values:
        errors = Table(title="prequential errors per regression task")
        for column in ("task", "examples", "mean target", "MAE", "RMSE"):
            errors.add_column(column)
        for name, t in values.items():
            errors.add_row(
                name,
                f"{t['n']:,}",
                f"{t['mean_target']:.2f}",
                f"{t['mae']:.2f}",
                f"{t['rmse']:.2f}",
            )
        console.print(errors)


def _finish(summary: dict[str, Any], report: str | None, plot: str | None) -> None:
    from liveprofile.report import plot_metrics, write_report

    _print_summary(summary)
    if report:
        write_report(summary, report)
        console.print(f"report written to {report}")
    if plot:
        plot_metrics(summary, plot)
        console.print(f"plot written to {plot}")


_store_option = click.option(
    "--store",
    default=DEFAULT_STORE,
    show_default=True,
    help="SQLite file holding profiles, models and offsets (created if missing).",
)
_report_options = [
    click.option(
        "--report",
        type=click.Path(dir_okay=False),
        help="Write a JSON report (counts, events/s, metrics per task and window).",
    ),
    click.option(
        "--plot",
        type=click.Path(dir_okay=False),
        help="Draw prequential AUC and log loss over time per task to a PNG.",
    ),
]


def _with(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


@click.command()
@_store_option
@click.option("--limit", type=int, help="Stop after this many transactions.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@_with(_report_options)
@_fail_cleanly
def quickstart(
    store: str, limit: int | None, progress: bool, report: str | None, plot: str | None
) -> None:
    """Replay The Complete Journey (1.47M grocery transactions) into the embedded store.

    Trains a delayed task, "will this household buy this product category again within 14
    days", prequentially, and prints throughput, profiles written, dead letters and metrics.
    """
    from liveprofile import api
    from liveprofile.datasets.completejourney import CompleteJourneySource, quickstart_config

    summary = api.replay(
        CompleteJourneySource(limit=limit),
        store=store,
        config=quickstart_config(),
        progress=progress,
    )
    _finish(summary, report, plot)
    console.print(f"try: liveprofile profile --store {store} 1000")


_source_options: list[Callable[[F], F]] = [
    click.argument("source", required=False),
    click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        help="Source format (default: from the file extension).",
    ),
    click.option(
        "--map",
        "mapping",
        multiple=True,
        metavar="FIELD=COLUMN",
        help="CSV: event field from a column, or a template like '{userId}:{movieId}'.",
    ),
    click.option(
        "--set",
        "constants",
        multiple=True,
        metavar="FIELD=VALUE",
        help="CSV: a constant field, e.g. type=rate.",
    ),
    click.option(
        "--item-tags",
        type=click.Path(exists=True, dir_okay=False),
        help="CSV: a second CSV with tags per item (e.g. MovieLens movies.csv).",
    ),
    click.option(
        "--item-key",
        default="movieId",
        show_default=True,
        help="CSV: the item column of --item-tags.",
    ),
    click.option(
        "--tags-column",
        default="genres",
        show_default=True,
        help="CSV: the tags column of --item-tags.",
    ),
    click.option(
        "--config",
        "config_path",
        type=click.Path(exists=True, dir_okay=False),
        help="Pipeline config (TOML); defaults need none.",
    ),
    click.option("--limit", type=int, help="Stop after this many records."),
    click.option("--progress/--no-progress", default=True, help="Show a progress bar."),
]


@dataclass
class RunInput:
    """What the source options of a command describe."""

    source: Source
    config: PipelineConfig
    limit: int | None
    progress: bool


def _with_input(func: Callable[..., None]) -> Callable[..., None]:
    """Turn the source options of a command into one :class:`RunInput` argument."""

    def wrapper(
        *,
        source: str | None,
        fmt: str | None,
        mapping: tuple[str, ...],
        constants: tuple[str, ...],
        item_tags: str | None,
        item_key: str,
        tags_column: str,
        config_path: str | None,
        limit: int | None,
        progress: bool,
        **rest: Any,
    ) -> None:
        if source is None and fmt != "completejourney":
            raise click.UsageError("give a SOURCE file ('-' for stdin) or --format completejourney")
        from liveprofile import api

        config = PipelineConfig.load(config_path)
        src = api.open_source(
            source,
            fmt,
            mapping=_pairs(mapping, "--map"),
            constants=_pairs(constants, "--set"),
            item_tags=item_tags,
            item_key=item_key,
            tags_column=tags_column,
            limit=limit,
        )
        func(RunInput(src, config, limit, progress), **rest)

    return functools.update_wrapper(wrapper, func)


@click.command()
@_with(_source_options)
@_store_option
@click.option(
    "--dead-letters",
    type=click.Path(dir_okay=False),
    help="JSON Lines file for rejected records [default: beside the store].",
)
@click.option(
    "--warm-start",
    type=click.Path(exists=True, dir_okay=False),
    help="Start a new store's models from a 'liveprofile warm-start' file.",
)
@click.option(
    "--allow-commands",
    is_flag=True,
    help="Apply command lines ($forget, $merge) of the source; without it they are dead-lettered.",
)
@_with(_report_options)
@_fail_cleanly
@_with_input
def replay(
    run: RunInput,
    store: str,
    dead_letters: str | None,
    warm_start: str | None,
    allow_commands: bool,
    report: str | None,
    plot: str | None,
) -> None:
    """Replay an event file (JSON Lines, CSV with a column mapping) through the pipeline.

    \b
    Examples:
      liveprofile replay events.jsonl --report report.json --plot metrics.png
      liveprofile replay ratings.csv --format movielens
      liveprofile replay ratings.csv --set type=rate --map user_id=userId --map ts=timestamp \\
          --map item_id=movieId --map value=rating --map event_id='{userId}:{movieId}' \\
          --item-tags movies.csv --item-key movieId --tags-column genres

    Re-running on the same store resumes after the last committed batch. Command lines
    ($forget erases a user, $merge merges two known users) are an operator's: they are applied
    only with --allow-commands.
    """
    from liveprofile import api

    if allow_commands and hasattr(run.source, "commands"):
        run.source.commands = True
    summary = api.replay(
        run.source,
        store=store,
        config=run.config,
        dead_letters=dead_letters,
        warm_start=warm_start,
        limit=run.limit,
        progress=run.progress,
    )
    _finish(summary, report, plot)


@click.command("warm-start")
@_with(_source_options)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to save the trained models.",
)
@_fail_cleanly
@_with_input
def warm_start_command(run: RunInput, out: str) -> None:
    """Train the initial models on a history file and save them.

    A later 'liveprofile replay --warm-start FILE' on a new store starts from these models
    instead of from zero. Profiles are not kept: only the models.
    """
    from liveprofile import api

    summary = api.warm_start(
        run.source, out, config=run.config, limit=run.limit, progress=run.progress
    )
    _print_summary(summary)
    console.print(f"models saved to {out}")


@click.command("compile")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Pipeline config (TOML) to compile for [default: the built-in config].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (for scripts).")
@_fail_cleanly
def compile_command(config_path: str | None, as_json: bool) -> None:
    """Compile the step for a config before the first real batch, into numba's cache.

    After a fresh install the first batches of a stream compile the step (about 35 s) and the
    first batch with a login compiles the folds of visitors into users (about 35 s more), so a
    running worker would stall there. This runs the config's pipeline over a small made-up shop
    (events under user ids, then anonymous sessions logging in, then an erasure) in a throwaway
    store, so that every later process with the same installation and cache starts compiled.
    Run it once per installation (at deploy time, or in an image build), or start workers with
    --warm-up. The cache is next to the installed package, or under NUMBA_CACHE_DIR.

    \b
    Examples:
      liveprofile compile --config shop.toml
      liveprofile compile --json
    """
    from liveprofile.engine.warmup import warm_up

    done = warm_up(PipelineConfig.load(config_path))
    figures = {
        "events": done.events,
        "seconds": round(done.seconds, 2),
        "compiled": done.compiled_after - done.compiled_before,
    }
    if as_json:
        click.echo(json.dumps(figures))
        return
    console.print(
        f"compiled the step for {config_path or 'the built-in config'} on {done.events:,} "
        f"made-up events in {done.seconds:.1f} s ({figures['compiled']} compiled functions "
        "loaded or made)"
    )


@click.command()
@click.argument("user")
@_store_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON only (for scripts).")
@_fail_cleanly
def profile(user: str, store: str, as_json: bool) -> None:
    """Show one user's profile: interests, counters, RFM, traits, scores, last seen."""
    from liveprofile import api

    view = api.read_profile(store, user)
    if as_json:
        # msgspec writes a non-finite number as null: the output stays valid JSON
        click.echo(json.dumps(msgspec.json.decode(msgspec.json.encode(view)), indent=2))
        return
    from liveprofile.profile_view import render_profile

    Console().print(render_profile(view))


@click.command()
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="JSON Lines file to write."
)
@click.option("--users", default=500, show_default=True, help="Number of users.")
@click.option("--days", default=28, show_default=True, help="Days of activity.")
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option(
    "--invalid-rate", default=0.0, show_default=True, help="Share of malformed lines to mix in."
)
@click.option(
    "--duplicate-rate", default=0.0, show_default=True, help="Share of events to send twice."
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="NAME=NUMBER",
    help="Set any other number of the shop (repeatable), e.g. --param drift_fraction=1.0 "
    "--param preference_concentration=0.1 for a planted drift the models' loss shows plainly.",
)
@_fail_cleanly
def generate(
    out: str,
    users: int,
    days: int,
    seed: int,
    invalid_rate: float,
    duplicate_rate: float,
    params: tuple[str, ...],
) -> None:
    """Write synthetic e-commerce funnels (view -> cart -> purchase) with a planted drift."""
    import dataclasses

    from liveprofile.datasets.synthetic import SyntheticConfig, write_jsonl
    from liveprofile.errors import ConfigError

    numbers = {f.name for f in dataclasses.fields(SyntheticConfig) if f.type == "float"}
    extra: dict[str, float] = {}
    for param in params:
        name, _, value = param.partition("=")
        try:
            extra[name] = float(value)
        except ValueError:
            raise ConfigError(f"--param {param!r}: expected NAME=NUMBER") from None
        if name not in numbers:
            raise ConfigError(f"--param {name!r}: not a shop setting; one of {sorted(numbers)}")
    cfg = SyntheticConfig(users=users, days=days, seed=seed, **extra)  # type: ignore[arg-type]
    stats = write_jsonl(out, cfg, invalid_rate=invalid_rate, duplicate_rate=duplicate_rate)
    console.print(
        f"wrote {stats.lines:,} lines to {out}: {stats.valid:,} events, "
        f"{stats.duplicates:,} duplicates, {stats.invalid:,} malformed; "
        f"drift at {cfg.drift_ts:.0f}"
    )


@click.command("dead-letters")
@click.option(
    "--file",
    "path",
    default=DEFAULT_STORE + ".deadletters.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Dead-letter file to read.",
)
@click.option("--limit", default=20, show_default=True, help="How many to show.")
@_fail_cleanly
def dead_letters(path: str, limit: int) -> None:
    """List rejected records with the reason each was rejected."""
    from liveprofile.events.deadletter import read_dead_letters

    if not Path(path).exists():
        console.print(f"no dead letters at {path}")
        return
    letters = read_dead_letters(path)
    table = Table(title=f"{len(letters):,} dead letters in {path}")
    for column in ("source", "offset", "reason", "raw"):
        table.add_column(column, overflow="fold")
    for letter in letters[:limit]:
        table.add_row(letter.source, str(letter.offset), letter.reason, letter.raw[:120])
    Console().print(table)

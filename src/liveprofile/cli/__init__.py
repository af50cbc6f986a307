"""The ``liveprofile`` command line: one top-level group that knows its subcommands by name and
imports a command's module only when that command runs (or its help is shown).

Command modules, by the path they operate:

- ``local``: the embedded path (quickstart, replay, warm-start, profile, generate, dead-letters,
  compile)
- ``datasets``: a bundled dataset written as events and its config (dataset)
- ``streams``: the Redis Streams path (publish, worker); ``ops``: operating it (status,
  redis-dead-letters, redrive)
- ``kafka``: a local Kafka broker, and the ``--kafka`` mode of publish, worker, status and
  collect
- ``collect``: the HTTP event collector; ``serve``: the read API; ``apps``: recommend;
  ``ranker``: the recommendations' learned ranker (train, show)
- ``segments``, ``privacy``: command groups over a store

No command module imports this one: each defines a plain ``click`` command, and :data:`COMMANDS`
below maps the command's name to where it lives. Shared options and the error handling are in
:mod:`liveprofile.cli.base`.

>>> import click
>>> context = click.Context(main)
>>> main.list_commands(context)[:3]
['collect', 'compile', 'dataset']
>>> main.get_command(context, "replay").help.split(".")[0]
'Replay an event file (JSON Lines, CSV with a column mapping) through the pipeline'
"""

from __future__ import annotations

import gc
import importlib

import click

#: command name -> "module:attribute" under ``liveprofile.cli``
COMMANDS = {
    "quickstart": "local:quickstart",
    "replay": "local:replay",
    "warm-start": "local:warm_start_command",
    "profile": "local:profile",
    "generate": "local:generate",
    "dataset": "datasets:dataset",
    "dead-letters": "local:dead_letters",
    "compile": "local:compile_command",
    "publish": "streams:publish",
    "worker": "streams:worker",
    "status": "ops:status",
    "redis-dead-letters": "ops:redis_dead_letters",
    "redrive": "ops:redrive",
    "collect": "collect:collect",
    "serve": "serve:serve",
    "recommend": "apps:recommend",
    "ranker": "ranker:ranker",
    "segments": "segments:segments",
    "privacy": "privacy:privacy",
    "kafka": "kafka:kafka",
    "flink": "flink:flink",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, from a name -> location table.

    >>> group = LazyGroup(name="demo", lazy={"replay": "local:replay"})
    >>> context = click.Context(group)
    >>> group.list_commands(context), group.get_command(context, "nope")
    (['replay'], None)
    >>> group.get_command(context, "replay").name
    'replay'
    """

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, name: str) -> click.Command:
        module, _, attribute = self.lazy[name].partition(":")
        command = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
        if not isinstance(command, click.Command) or command.name != name:
            raise TypeError(f"{self.lazy[name]} is not the click command {name!r}")
        return command


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="liveprofile")
def main() -> None:
    """Real-time user profiles and online learning from event streams.

    Events (views, purchases, ratings, ...) update each user's profile and the online models as
    they arrive; profiles, models and the source offset are committed together to an embedded
    SQLite store, so an interrupted replay resumes exactly where it stopped.
    """
    # A replay allocates many short-lived containers per event; collecting the young
    # generation less often saves about a tenth of the time and changes no result.
    gc.set_threshold(50_000, 20, 20)


__all__ = ["COMMANDS", "LazyGroup", "main"]

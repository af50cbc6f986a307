"""The package layout: the command line loads its commands lazily, and no module imports one that
imports it back."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from liveprofile.cli import COMMANDS, main

HEAVY = ("numba", "pandas", "river", "numpy", "fastapi", "redis", "liveprofile.api")


def _imported_after(code: str) -> set[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(done.stdout.split())


def test_help_imports_no_heavy_module() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from liveprofile.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\n"
        "assert result.exit_code == 0 and 'worker' in result.output, result.output"
    )
    assert _imported_after(code) == set()


def test_a_command_imports_what_it_needs_when_it_runs() -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from liveprofile.cli import main\n"
        "result = CliRunner().invoke(main, ['profile', 'u1', '--store', 'memory://'])\n"
        "assert result.exit_code != 0, result.output"
    )
    assert "liveprofile.api" in _imported_after(code)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_listed_command_loads_under_its_name(name: str) -> None:
    command = main.get_command(click.Context(main), name)
    assert isinstance(command, click.Command) and command.name == name
    assert command.help and len(command.help.split()) > 5


def test_listed_commands_are_all_there_is() -> None:
    assert main.list_commands(click.Context(main)) == sorted(COMMANDS)
    assert main.get_command(click.Context(main), "no-such-command") is None

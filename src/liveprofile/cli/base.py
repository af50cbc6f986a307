"""What every command module shares: the console, the default store and the error handling.

>>> from liveprofile.errors import ConfigError
>>> @_fail_cleanly
... def broken() -> None:
...     raise ConfigError("no such config")
>>> try:
...     broken()
... except SystemExit as exc:
...     exc.code
78
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from liveprofile.errors import LiveprofileError, SourceError

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)
DEFAULT_STORE = "liveprofile-data/profiles.db"


def _fail_cleanly(func: F) -> F:
    """Turn liveprofile errors into a one-line message and the error's exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LiveprofileError as exc:
            console.print(f"[red]error:[/red] {exc}")
            sys.exit(exc.exit_code)

    return functools.update_wrapper(wrapper, func)  # type: ignore[return-value]


def lines(path: str) -> Iterator[bytes]:
    """The lines of the file at ``path`` as bytes ('-': standard input)."""
    if path == "-":
        yield from sys.stdin.buffer
        return
    if not Path(path).is_file():
        raise SourceError(f"no such file: {path}")
    with open(path, "rb") as fh:
        yield from fh


__all__ = ["DEFAULT_STORE", "_fail_cleanly", "console", "lines"]

"""How the step's code is compiled: with numba, or not at all under ``LIVEPROFILE_NO_JIT=1``.

The kernel (:mod:`.kernel`) and its helpers (:mod:`.rowops`, :mod:`.featurize`,
:mod:`.behaviour`, :mod:`.chains`) and the rules they share with the object-level code
(:mod:`.rules`) are decorated with :data:`jit` (functions called from Python) or :data:`leaf`
(per-event helpers called from compiled code only). With the environment variable
``LIVEPROFILE_NO_JIT=1`` set before the engine is imported (or numba's own
``NUMBA_DISABLE_JIT=1``) both leave the functions as they are: the compiled step then runs as
plain Python over the same records of arrays, with the same results to the byte, slowly (a
few thousand events a second), and ``pdb`` steps through it line by line (a
``breakpoint()`` put in the kernel works as well)::

    liveprofile generate --users 20 --days 2 --out events.jsonl
    LIVEPROFILE_NO_JIT=1 python -m pdb -m liveprofile.cli replay events.jsonl --store /tmp/s.db
    (Pdb) break liveprofile/engine/kernel.py:80
    (Pdb) continue

The typed dict of waiting examples stays numba's (its methods work from Python), and the rest
of the project's compiled code (learners, byte writers, velocity counts) stays compiled.

>>> NO_JIT in (True, False)
True
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numba

#: whether the step runs uncompiled (read once, when the engine is imported)
NO_JIT = os.environ.get("LIVEPROFILE_NO_JIT", "") not in ("", "0") or bool(
    numba.config.DISABLE_JIT  # type: ignore[attr-defined]
)
_JIT: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}
#: the per-event helpers neither allocate nor touch the typed dict, so they are compiled without
#: reference counting: a record of arrays is then passed and read at no cost, where inlining them
#: into the caller's body (``inline="always"``) counted a reference for every array they read
_LEAF: dict[str, Any] = {**_JIT, "_nrt": False, "no_cpython_wrapper": True}


class Uncompiled:
    """A function of the step run as plain Python, with the part of numba's dispatcher the
    engine calls (``compile`` for a signature, ``typeof_pyval``, ``py_func``).

    >>> def twice(x):
    ...     return 2 * x
    >>> f = Uncompiled(twice)
    >>> f(3), f.compile((f.typeof_pyval(3),))(4), f.py_func is twice
    (6, 8, True)
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.py_func = function
        functools.update_wrapper(self, function)

    def __call__(self, *args: Any) -> Any:
        return self.py_func(*args)

    def typeof_pyval(self, value: Any) -> None:
        return None

    def compile(self, signature: Any) -> Callable[..., Any]:
        return self.py_func


def _plain(function: Callable[..., Any]) -> Callable[..., Any]:
    return function


#: a function of the step called from Python (and from compiled code)
jit: Callable[[Callable[..., Any]], Any] = Uncompiled if NO_JIT else numba.njit(**_JIT)
#: a per-event helper, called from compiled code only
leaf: Callable[[Callable[..., Any]], Any] = _plain if NO_JIT else numba.njit(**_LEAF)

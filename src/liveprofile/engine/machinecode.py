"""The machine code of a numba function for given arguments, found once per kind of arguments.

The stops of a batch with logins call the kernel once per stretch of events
(:mod:`liveprofile.engine.links`), and numba's dispatch works out the types of the records of
arrays anew on every call, in Python (a millisecond or more each time). :func:`compiled_for`
hands out the compiled entry point for the arguments' types instead, and keeps it for every
later batch whose arguments are of the same kinds: the key (dtype, dimensions, layout and flags
of each array, the type of each scalar, the class of each record) is read from the arrays'
attributes, without numba's typing.

>>> import numba, numpy as np
>>> @numba.njit
... def total(a, k):
...     return a.sum() * k
>>> run = compiled_for(total, (np.ones(3), 2.0))
>>> float(run(np.ones(4), 3.0)), compiled_for(total, (np.zeros(9), 1.0)) is run
(12.0, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

_known: dict[tuple[Any, ...], Callable[..., Any]] = {}


def compiled_for(function: Any, args: tuple[Any, ...]) -> Callable[..., Any]:
    """The machine code of numba ``function`` for arguments of the kinds of ``args``."""
    key = (function, _kinds(args))
    run = _known.get(key)
    if run is None:
        signature = tuple(function.typeof_pyval(a) for a in args)
        run = _known[key] = function.compile(signature)
    return run


def _kinds(args: tuple[Any, ...]) -> tuple[Any, ...]:
    out: list[Any] = []
    for a in args:
        if isinstance(a, np.ndarray):
            f = a.flags
            out.append((a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned))
        elif isinstance(a, tuple):
            out.append((type(a), _kinds(a)))
        else:
            out.append(type(a))
    return tuple(out)

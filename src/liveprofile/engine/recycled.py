"""Records of arrays recycled from call to call instead of allocated (:class:`Recycled`): a
single score lays out one user and one item per request, where allocating each field's array
costs more than the work on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt


class Recycled:
    """Empty records as ``make`` makes them, recycled: the first call with some arguments
    makes them in one block of memory and keeps a copy of its bytes; each later call with the
    same arguments writes those bytes back (one copy instead of an allocation per field).
    The records of a call are valid until the next call (:class:`ExposureFeatures` holds its
    lock meanwhile).

    >>> from liveprofile.engine.records import Events
    >>> recycled = Recycled(lambda n: Events(*(np.zeros(n, np.int64) for _ in Events._fields)))
    >>> ev = recycled.empty(3)
    >>> ev.ts[:] = 7
    >>> recycled.empty(3) is ev, ev.ts.tolist(), ev.ts.flags.c_contiguous
    (True, [0, 0, 0], True)
    """

    def __init__(self, make: Callable[..., Any]) -> None:
        self._make = make
        self._kept: dict[tuple[Any, ...], tuple[npt.NDArray[np.uint8], bytes, Any]] = {}

    def empty(self, *args: Any) -> Any:
        kept = self._kept.get(args)
        if kept is None:
            if len(self._kept) >= 4:
                self._kept.clear()
            kept = self._kept[args] = self._block(self._make(*args))
        block, fresh, record = kept
        block[:] = np.frombuffer(fresh, np.uint8)
        return record

    @staticmethod
    def _block(record: Any) -> tuple[npt.NDArray[np.uint8], bytes, Any]:
        """``record``'s arrays as views of one block (each at a multiple of 16 bytes, so as
        aligned as an array of its own), and the block's bytes as made."""
        ends = [0]
        for a in record:
            ends.append(ends[-1] + -(-a.nbytes // 16) * 16)
        block = np.zeros(ends[-1], np.uint8)
        views = []
        for a, at in zip(record, ends, strict=False):
            view = block[at : at + a.nbytes].view(a.dtype).reshape(a.shape)
            view[...] = a
            views.append(view)
        return block, block.tobytes(), type(record)(*views)

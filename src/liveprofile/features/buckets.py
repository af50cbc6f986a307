"""How a number becomes a one-hot bucket, and the other small rules of the hashed features.

Both steps follow these functions: the Python feature builder (:mod:`.hashing`,
:mod:`.behaviour`) calls them as they are, and the compiled step compiles the same functions
with numba (:mod:`liveprofile.engine.lookup`), so each rule is written once. They are plain
arithmetic on numbers, which is what numba compiles: a bucket rule returns a bucket from 0 to
``last``, the last bucket taking everything past it.

>>> [log2_bucket(x, 4) for x in (-1.0, 0.0, 1.0, 3.0, 7.0, 1e9)]
[0, 0, 1, 2, 3, 4]
>>> decile(0.25, 9), decile(1.0, 9), rounded(2.5, 20), rounded(-3.0, 20), rounded(99.0, 20)
(2, 9, 2, 0, 20)
>>> day_parts(0.0), day_parts(86400.0 * 3 + 7200.5)  # 1970-01-01 was a Thursday
((0, 3), (2, 6))
"""

from __future__ import annotations

import math

from liveprofile.durations import DAY, HOUR

#: the multiplier that mixes the hashes of a cross's parts
MIX = 0x9E3779B1


def log2_bucket(x: float, last: int) -> int:
    """The bucket of ``x`` on a log2 scale (0, 1, 2-3, 4-7, ...); zero or less (a spend net
    of refunds) is the first."""
    if not x > 0.0:
        return 0
    b = int(math.log2(1.0 + x))
    return b if b < last else last


def decile(x: float, last: int) -> int:
    """The bucket of a share or rate ``x`` in [0, 1] by tenths, 1.0 in the last."""
    b = int(x * 10)
    return b if b < last else last


def rounded(x: float, last: int) -> int:
    """``x`` rounded half to even, at least 0 (a mean rating's half points)."""
    b = round(x)
    if b < 0:
        b = 0
    return b if b < last else last


def cross_index(user_part: int, topic_part: int, salt: int, mask: int) -> int:
    """The index of a user x topic cross from the hashes of its parts: only the low bits of
    ``user_part * MIX`` reach the index, so the part is masked first, which keeps the product
    within 64 bits (``features.bits`` is at most 28).

    >>> cross_index(3, 5, 0, 0xFF) == (3 * MIX + 5) & 0xFF
    True
    """
    return (((user_part & mask) * MIX + topic_part) ^ salt) & mask


def day_parts(ts: float) -> tuple[int, int]:
    """The hour of the day and the day of the week (0: Monday) of event time ``ts`` (UTC)."""
    day, second = divmod(int(ts), int(DAY))
    return second // int(HOUR), (day + 3) % 7

"""The compiled step's profile rows, kept between batches for the users seen most recently.

Laying a profile out as a :class:`~liveprofile.engine.records.Users` row (:func:`.rowio.
load_users`) walks its dicts and lists in Python, and so does interning the strings it holds. A
user who comes back batch after batch needs neither: :class:`ResidentUsers` keeps the rows of
the ``cap`` users seen most recently as the kernel left them, so a batch copies those rows in
(:func:`copy_rows`, compiled: each list and map up to its length, the bulk of a row being room
for the longest ones) and lays out only the users new to the table. The rows equal what laying
out the committed profiles would give: the compiled step is the only writer of its
state's profiles while it owns the state, it drops the table when it hands the state back, and a
row whose profile has another event count or last event time than the row, or is gone, is
laid out again from the profile (a profile merged, erased or expired elsewhere).

>>> from liveprofile.engine.records import Users
>>> from liveprofile.profile.state import Profile
>>> table = ResidentUsers(cap=2)
>>> U = Users.empty(3, types=2, tasks=1, top_k=4, room=3, recent=5)
>>> U.pi[:, 0] = [7, 8, 9]  # events so far
>>> table.keep(["a", "b", "c"], U)  # room for two: the last two stay
>>> profiles = {u: Profile(u, 0.0, 0.0, 0.0, n=n) for u, n in (("b", 8), ("c", 9))}
>>> sorted(table.slot), table.rows_of(["c", "x"], profiles)
(['b', 'c'], ([0], [1]))
>>> profiles["c"].n = 12  # changed elsewhere (e.g. merged): laid out again from the profile
>>> table.rows_of(["c", "b"], profiles), sorted(table.slot)
(([1], [0]), ['b'])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from liveprofile.engine.layout import P_LAST, P_N
from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.records import Users

if TYPE_CHECKING:
    from liveprofile.profile.state import Profile

#: the fields of :class:`Users` a batch starts afresh (not kept between batches)
PER_BATCH = ("first", "touched")
#: rows laid out at first (the whole table when it holds no more): growing a table of profiles
#: with wide maps copied it each time
FIRST_ROWS = 16_384
#: the fields of :class:`Users` with a length per row (per row and map: the behaviour maps),
#: and that length: a row is copied up to it, as a row laid out from its profile has nothing
#: (zeros) past it
BY_LENGTH = {
    "tord": "tlen",
    "ik": "il",
    "iv": "il",
    "okey": "olen",
    "oval": "olen",
    "sday": "slen",
    "scents": "slen",
    "rts": "rlen",
    "rty": "rlen",
    "rit": "rlen",
    "rva": "rlen",
    "bkey": "blen",
    "bval": "blen",
}


def copy_rows(dst: Users, to: Any, src: Users, of: Any) -> None:
    """Rows ``of`` of ``src`` into rows ``to`` of ``dst`` (int64 arrays), every field but
    :data:`PER_BATCH`; what lies past a row's length (:data:`BY_LENGTH`) is not copied (the
    copy then equals the row laid out from the profile when ``dst``'s rows are empty), and a
    row of ``dst`` wider than ``src``'s (event types added since) gets zeros past them."""
    for field in Users._fields:
        if field in PER_BATCH:
            continue
        d, s = getattr(dst, field), getattr(src, field)
        length = BY_LENGTH.get(field)
        if length is None:
            _whole(d.reshape(len(d), -1), to, s.reshape(len(s), -1), of)
        elif d.ndim == 2:
            _upto(d, to, s, of, getattr(src, length))
        else:  # the behaviour maps: a length per map, a row of floats per key (or one key)
            _upto_each(
                d.reshape(*d.shape[:3], -1), to, s.reshape(*s.shape[:3], -1), of,
                getattr(src, length),
            )  # fmt: skip


# element by element: slices of a row cost more than the few values they hold


@numba.njit(cache=True, nogil=True)
def _whole(dst, to, src, of):  # type: ignore[no-untyped-def]
    w = min(dst.shape[1], src.shape[1])
    for j in range(to.shape[0]):
        d, s = to[j], of[j]
        for c in range(w):
            dst[d, c] = src[s, c]
        for c in range(w, dst.shape[1]):
            dst[d, c] = 0


@numba.njit(cache=True, nogil=True)
def _upto(dst, to, src, of, lengths):  # type: ignore[no-untyped-def]
    for j in range(to.shape[0]):
        d, s = to[j], of[j]
        for c in range(lengths[s]):
            dst[d, c] = src[s, c]


@numba.njit(cache=True, nogil=True)
def _upto_each(dst, to, src, of, lengths):  # type: ignore[no-untyped-def]
    w = min(dst.shape[3], src.shape[3])
    for j in range(to.shape[0]):
        d, s = to[j], of[j]
        for k in range(dst.shape[1]):
            for q in range(lengths[s, k]):
                for c in range(w):
                    dst[d, k, q, c] = src[s, k, q, c]
                for c in range(w, dst.shape[3]):
                    dst[d, k, q, c] = 0


class ResidentUsers:
    """Rows of the ``cap`` users seen most recently, by user (see the module's docstring)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        #: each resident user's row in :attr:`rows`, least recently seen first
        self.slot: dict[str, int] = {}
        self.rows: Users | None = None
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.slot)

    def clear(self) -> None:
        """Forget every row (the profiles may change outside the compiled step)."""
        self.slot.clear()
        self._free.clear()
        self.rows = None

    def forget(self, users: Iterable[str]) -> None:
        """Forget the rows of ``users`` (e.g. profiles merged or erased elsewhere)."""
        for user in users:
            s = self.slot.pop(user, None)
            if s is not None:
                self._free.append(s)

    def rows_of(
        self, users: Sequence[str], profiles: dict[str, Profile]
    ) -> tuple[list[int], list[int]]:
        """The positions in ``users`` of the resident ones, and their rows. A row whose profile
        is gone or has another event count or last event time than the row (changed outside
        the compiled step: merged, erased, expired) is forgotten instead."""
        at, rows, stale = [], [], []
        slot = self.slot
        for i, user in enumerate(users):
            s = slot.get(user)
            if s is not None:
                at.append(i)
                rows.append(s)
        if rows:
            assert self.rows is not None
            n = self.rows.pi[rows, P_N].tolist()
            last = self.rows.pf[rows, P_LAST].tolist()
            for k in range(len(rows)):
                p = peek(profiles, users[at[k]])  # the fields read here are never held
                if p is None or p.n != n[k] or p.last_ts != last[k]:
                    stale.append(k)
        if stale:
            self.forget(users[at[k]] for k in stale)
            gone = set(stale)
            at = [a for k, a in enumerate(at) if k not in gone]
            rows = [r for k, r in enumerate(rows) if k not in gone]
        return at, rows

    def keep(self, users: Sequence[str], U: Users) -> None:
        """Keep the rows of ``U`` (row ``r`` holds ``users[r]``) as the most recent ones. A
        user kept already keeps its row; new ones take the lowest free rows."""
        cap = self.cap
        if cap <= 0 or not users:
            return
        start = max(0, len(users) - cap)  # a batch larger than the table: its last users
        kept = users[start:]
        slot, free = self.slot, self._free
        pop = slot.pop
        targets = []
        fresh = []  # where in ``kept`` the users without a row are
        for j, user in enumerate(kept):  # most recently seen go last
            s = pop(user, -1)
            if s < 0:
                fresh.append(j)
            slot[user] = s
            targets.append(s)
        over = len(slot) - cap
        if over > 0:  # the least recently seen leave (none of ``kept``: they went last)
            for user in list(islice(slot, over)):
                free.append(pop(user))
        n = len(slot) - len(fresh) + len(free)  # rows in use or free
        if fresh:
            free.sort(reverse=True)  # lowest rows first, so the table stays compact
            for j in fresh:
                s = free.pop() if free else n
                if s == n:
                    n += 1
                slot[kept[j]] = s
                targets[j] = s
        self._fit(U, n)
        assert self.rows is not None
        copy_rows(self.rows, np.array(targets, np.int64), U, np.arange(start, len(users)))

    def _fit(self, U: Users, n: int) -> None:
        """Make :attr:`rows` hold at least ``n`` rows and ``U``'s widths. Only the fields too
        small are laid out anew (a list grown longer, say key outcomes after a merge, does not
        copy the whole table), and a field with a length per row grows with room to spare."""
        old, cap = self.rows, max(self.cap, n)
        if old is None:  # room for the whole table at once (pages are zeroed when first used)
            rows = max(n, min(cap, FIRST_ROWS))
        else:
            have = old.pf.shape[0]
            rows = have if have >= n else min(max(n, 2 * have), cap)
        arrays: list[Any] = []
        for field in Users._fields:
            new = getattr(U, field)
            shape = [rows, *new.shape[1:]]
            if old is None:
                arrays.append(np.zeros(shape, new.dtype))
                continue
            had = getattr(old, field)
            if had.shape[0] >= rows and all(
                a >= b for a, b in zip(had.shape[1:], shape[1:], strict=True)
            ):
                arrays.append(had)
                continue
            shape[1:] = [max(a, b) for a, b in zip(shape[1:], had.shape[1:], strict=True)]
            k = 1 if had.ndim == 2 else 2  # the axis a row's (or map's) length runs along
            if field in BY_LENGTH and shape[k] > had.shape[k]:
                shape[k] = max(shape[k], had.shape[k] + had.shape[k] // 4)
            a = np.zeros(shape, new.dtype)
            a[tuple(slice(0, k) for k in had.shape)] = had
            arrays.append(a)
        self.rows = Users(*arrays)

"""The compiled step's profile rows, kept between batches for the users seen most recently.

Laying a profile out as a :class:`~liveprofile.engine.records.Users` row (:func:`.rowio.
load_users`) walks its dicts and lists in Python, and so does interning the strings it holds. A
user who comes back batch after batch needs neither: :class:`ResidentUsers` keeps the rows of
the ``cap`` users seen most recently exactly as the kernel left them, so a batch copies those
rows in with one gather per field and lays out only the users new to the table. The rows equal
what laying out the committed profiles would give: the compiled step is the only writer of its
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

import numpy as np

from liveprofile.engine.layout import P_LAST, P_N
from liveprofile.engine.lazyprofiles import peek
from liveprofile.engine.records import Users

if TYPE_CHECKING:
    from liveprofile.profile.state import Profile

#: the fields of :class:`Users` a batch starts afresh (not kept between batches)
PER_BATCH = ("first", "touched")


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
        dst = np.array(targets, np.int64)
        for field in Users._fields:
            if field in PER_BATCH:
                continue
            table, new = getattr(self.rows, field), getattr(U, field)
            if new.ndim == 1:
                table[dst] = new[start:]
            else:
                w = new.shape[1]
                table[dst, :w] = new[start:]
                if table.shape[1] > w:  # wider than this batch's rows: nothing there
                    table[dst, w:] = 0

    def _fit(self, U: Users, n: int) -> None:
        """Make :attr:`rows` hold at least ``n`` rows and ``U``'s widths."""
        old = self.rows
        if (
            old is not None
            and old.pf.shape[0] >= n
            and all(
                a >= b
                for f in Users._fields
                for a, b in zip(getattr(old, f).shape[1:], getattr(U, f).shape[1:], strict=True)
            )
        ):
            return
        if old is None:
            rows = max(n, 64)
        else:
            have = old.pf.shape[0]
            rows = have if have >= n else max(n, 2 * have)
        arrays: list[Any] = []
        for field in Users._fields:
            new = getattr(U, field)
            shape = list(new.shape)
            shape[0] = rows
            if old is not None:
                have = getattr(old, field)
                shape[1:] = [max(a, b) for a, b in zip(shape[1:], have.shape[1:], strict=True)]
            a = np.zeros(shape, new.dtype)
            if old is not None:
                have = getattr(old, field)
                a[tuple(slice(0, k) for k in have.shape)] = have
            arrays.append(a)
        self.rows = Users(*arrays)

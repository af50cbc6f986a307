"""Profiles and item statistics into the compiled step's rows, and profiles back out of them.

Profiles stay :class:`~liveprofile.profile.state.Profile` objects between batches, as the runners
load and commit them: :func:`load_users` lays the users of a batch out as
:class:`~liveprofile.engine.records.Users` rows, :func:`store_users` writes the touched rows
back (in a batch without the Python lifecycle's stops, with the kernel fields held as bytes until
something reads them, :mod:`.lazyprofiles`). Item statistics stay in
:class:`~liveprofile.engine.records.Items` rows across batches; :func:`hold_items` brings in the
ones not held yet.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, cast
from weakref import WeakKeyDictionary

import numpy as np

from liveprofile.engine import behaviour
from liveprofile.engine import layout as L
from liveprofile.engine.codes import CodeTables
from liveprofile.engine.countmaps import KeyOrders, count_maps
from liveprofile.engine.lazyprofiles import ProfileMap
from liveprofile.engine.profilerows import KernelBytes
from liveprofile.engine.records import Items, Users
from liveprofile.engine.resident import ResidentUsers, copy_rows
from liveprofile.engine.rowbytes import Names, row_bytes, row_fields_bytes
from liveprofile.profile.items import ItemStats
from liveprofile.profile.state import Profile

_floats = attrgetter(*L.PROFILE_FLOATS)
# store_users assigns the float columns in this order
_FLOATS = ("anchor", "first_ts", "last_ts", "monetary", "last_purchase_ts", "value_sum")
assert _FLOATS == L.PROFILE_FLOATS
#: the names of each code table's event types, topics and items, for :func:`row_fields`
_names: WeakKeyDictionary[CodeTables, tuple[Names, Names, Names]] = WeakKeyDictionary()
#: the key orders of each code table's count dicts, for :func:`count_maps`
_orders: WeakKeyDictionary[CodeTables, KeyOrders] = WeakKeyDictionary()


def _no_purchase(p: Profile) -> list[float]:
    """The float columns of a profile without purchases (NaN: no last purchase)."""
    return [np.nan if f == "last_purchase_ts" else getattr(p, f) for f in L.PROFILE_FLOATS]


def load_users(
    tables: CodeTables,
    profiles: dict[str, Profile],
    users: list[str],
    resident: ResidentUsers,
    empty: Callable[..., Users] = Users.empty,
) -> Users:
    """The rows of ``users``: from ``resident`` (rows kept as earlier steps left them) where
    there, from ``profiles`` otherwise, empty for new users. ``empty`` makes the empty rows
    (with the arguments of :meth:`Users.empty`; serving passes rows it recycles)."""
    config = tables.config
    again, before = resident.rows_of(users, profiles)
    last_users = resident.rows
    # a merged profile holds the key outcomes of both ids until its next one trims them
    room = config.profile.outcome_keys
    kept = set(again)
    for r, user in enumerate(users):
        p = None if r in kept else profiles.get(user)
        if p is not None and len(p.key_outcomes) > room:
            room = len(p.key_outcomes)
    if again:
        assert last_users is not None
        room = max(room, int(last_users.olen[before].max()))
    U = empty(
        len(users),
        max(len(tables.types), 1),
        len(tables.task_names),
        config.profile.top_k,
        room,
        config.risk.recent,
        behaviour.rows(tables.behaviour),
    )
    tcode, kcode, icode = tables.topics.code, tables.types.code, tables.items.code
    b_room = config.profile.behaviour_keys
    names = tables.task_names
    for r, user in enumerate(users):
        if r in kept:
            continue
        p = profiles.get(user)
        if p is None:
            continue
        if p.last_purchase_ts is None:
            U.pf[r] = _no_purchase(p)
        else:
            U.pf[r] = _floats(p)
        U.pi[r] = (p.n, p.purchases, p.value_n, 1)
        for j, (kind, v) in enumerate(p.decayed.items()):
            c = kcode[kind]
            U.dec[r, c] = v
            U.tord[r, j] = c
        U.tlen[r] = len(p.decayed)
        for kind, c in p.counts.items():
            U.cnt[r, kcode[kind]] = c
        m = len(p.interests)
        if m:
            U.ik[r, :m] = [tcode[k] for k in p.interests]
            U.iv[r, :m] = list(p.interests.values())
            U.il[r] = m
        m = len(p.key_outcomes)
        if m:
            U.okey[r, :m] = list(p.key_outcomes)
            U.oval[r, :m] = list(p.key_outcomes.values())
            U.olen[r] = m
        m = len(p.spend)
        if m:
            U.sday[r, :m] = list(p.spend)
            U.scents[r, :m] = list(p.spend.values())
            U.slen[r] = m
        for j, (ts, kind, item, value) in enumerate(p.recent):
            U.rts[r, j] = ts
            U.rty[r, j] = kcode[kind]
            U.rit[r, j] = -1 if item is None else icode[item]
            U.rva[r, j] = np.nan if value is None else value
        U.rlen[r] = len(p.recent)
        behaviour.load_row(U, r, p, icode, tcode, b_room)
        for t, name in enumerate(names):
            U.count[r, L.C_POSITIVES, t] = p.positives.get(name, 0)
            U.count[r, L.C_EXAMPLES, t] = p.examples.get(name, 0)
    if again:
        assert last_users is not None
        copy_rows(U, np.array(again, np.int64), last_users, np.array(before, np.int64))
    return U


def store_users(
    tables: CodeTables,
    profiles: dict[str, Profile],
    users: list[str],
    U: Users,
    scores: Any,
    kept: KernelBytes | None = None,
    lazy: bool = False,
) -> set[str]:
    """Write the touched rows of ``U`` back to ``profiles``; ``scores``: the last score per
    task of each row (NaN: none) and the record that first scored it. Returns the users.
    ``kept`` keeps the bytes the kernel fields were decoded from, for the commit. ``lazy``
    (with a :class:`~liveprofile.engine.lazyprofiles.ProfileMap`): the kernel fields are
    held as those bytes, decoded when something reads the profile (``kept`` is not used)."""
    kinds, topics, items = tables.types.names, tables.topics.names, tables.items.names
    names = tables.task_names
    touched = np.flatnonzero(U.touched)
    # the touched rows as Python values, one conversion per field rather than per row; the
    # dicts and lists made by msgspec from the rows written as MessagePack (see rowbytes)
    pf_l, pi_l = U.pf[touched].tolist(), U.pi[touched].tolist()
    known = _names.get(tables)
    if known is None:
        known = _names[tables] = (Names(), Names(), Names())
    tables_names = known[0].sync(kinds), known[1].sync(topics), known[2].sync(items)
    mapped = isinstance(profiles, ProfileMap)
    hold = profiles.hold if lazy and isinstance(profiles, ProfileMap) else None
    fields: list[Any] = []
    if hold is not None:
        cast(ProfileMap, profiles).fresh()
        blob, offsets = row_bytes(U, touched, *tables_names)
        begins = (offsets[:, 0] - 1).tolist()  # each row's array header
        ends = offsets[:, -1].tolist()
        starts = (offsets - offsets[:, :1] + 1).tolist()  # within each row
    else:
        fields, blob, offsets = row_fields_bytes(U, touched, *tables_names)
        if kept is not None:
            kept.keep(blob, offsets, [users[r] for r in touched.tolist()], fields)
    rows = touched.tolist()
    got = dict.get  # the profiles as they are (see lazyprofiles.peek): every field is written
    before = [got(profiles, users[r]) for r in rows]
    # examples and positives: written from the rows, in each old dict's key order (countmaps)
    orders = _orders.get(tables)
    if orders is None or orders.names != names:
        orders = _orders[tables] = KeyOrders(names)
    code = orders.code
    codes = [(0, 0) if p is None else (code(p.examples), code(p.positives)) for p in before]
    codes_a = np.array(codes, np.int64).reshape(len(rows), 2)
    odd = codes_a.min(axis=1) < 0  # a key that is not a task: left to _counted
    maps = count_maps(U, touched, np.maximum(codes_a, 0), orders)
    odd_l = odd.tolist()
    last, scored = scores
    last_t = last[touched]
    scored_l = scored[touched].tolist()
    rescored = (last_t == last_t).any(axis=1).tolist()  # a row with no new score keeps its scores
    last_l = last_t.tolist()
    out: set[str] = set()
    for j, r in enumerate(rows):
        user = users[r]
        out.add(user)
        p = before[j]
        f, i = pf_l[j], pi_l[j]
        if p is None:
            p = profiles[user] = Profile(user=user, anchor=f[0], first_ts=f[1], last_ts=f[2])
        p.anchor, p.first_ts, p.last_ts, p.monetary, p.last_purchase_ts, p.value_sum = f
        if f[L.P_LASTPUR] != f[L.P_LASTPUR]:
            p.last_purchase_ts = None
        p.n, p.purchases, p.value_n = i[L.P_N], i[L.P_PURCHASES], i[L.P_VN]
        if odd_l[j]:
            counts, ticks = U.count[r].tolist(), U.first[r].tolist()
            p.examples = _counted(p.examples, names, counts[L.C_EXAMPLES], ticks[L.C_EXAMPLES])
            p.positives = _counted(p.positives, names, counts[L.C_POSITIVES], ticks[L.C_POSITIVES])
        else:
            x = maps[j]
            p.examples, p.positives = x.examples, x.positives
        if rescored[j]:
            p.scores = _counted(p.scores, names, last_l[j], scored_l[j], zero=True)
        if hold is not None:
            hold(user, p, blob[begins[j] : ends[j]], starts[j])
            continue
        x = fields[j]
        p.counts, p.decayed, p.interests = x.counts, x.decayed, x.interests
        p.key_outcomes, p.spend, p.recent = x.key_outcomes, x.spend, x.recent
        p.behaviour_items, p.behaviour_categories = x.behaviour_items, x.behaviour_categories
        if mapped:
            cast(ProfileMap, profiles).settle(user)
    return out


def hold_items(
    tables: CodeTables, X: Items, held: Any, stats: dict[str, ItemStats], new: dict[int, str]
) -> None:
    """Bring items into rows ``X`` (``new``: item by code), from ``stats`` (loaded from the
    store) or as new items; ``held`` marks the rows held."""
    rows = np.fromiter(new, np.int64, len(new))
    X.xf[rows] = 0.0
    X.xi[rows] = 0
    X.xi[rows, L.I_CAT] = -1
    X.count[rows] = 0
    X.first[rows] = -1
    held[rows] = True
    names = tables.task_names
    for r, item in new.items():
        s = stats.get(item)
        if s is None:
            continue
        if s.category is not None and s.category not in tables.topics.code:
            tables.intern([], [], [s.category], [])
        X.xf[r] = [getattr(s, f) for f in L.ITEM_FLOATS]
        X.xi[r, L.I_N] = s.n
        X.xi[r, L.I_VN] = s.value_n
        X.xi[r, L.I_CAT] = -1 if s.category is None else tables.topics.code[s.category]
        X.xi[r, L.I_EXISTS] = 1
        for c, counts in ((L.C_EXAMPLES, s.examples), (L.C_POSITIVES, s.positives)):
            for j, name in enumerate(counts):
                t = names.index(name)
                X.first[r, c, t] = j - len(counts)  # before this run's ticks, in order
                X.count[r, c, t] = counts[name]


def _counted(
    old: dict[str, Any], names: list[str], values: list[Any], ticks: Any, zero: bool = False
) -> Any:
    """``old`` with the tasks' new values (NaN, and 0 unless ``zero``: none), keys in the order a
    dict updated event by event would have: old keys where they were, new ones in the order they
    first got a value. (A score of 0.0 is a prediction, a count of 0 is no example.)"""
    fresh = []
    new = old
    for t, name in enumerate(names):
        v = values[t]
        if (v or zero) and v == v:
            if name in old:
                if old[name] != v:
                    if new is old:
                        new = dict(old)
                    new[name] = v
            else:
                fresh.append((int(ticks[t]), name, v))
    if fresh:
        new = dict(new)
        for _, name, v in sorted(fresh):
            new[name] = v
    return new

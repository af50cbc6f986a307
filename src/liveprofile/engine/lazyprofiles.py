"""Profiles whose kernel fields stay as the compiled step wrote them until something reads them.

After a batch the compiled step used to decode every touched user's kernel fields (``counts``,
``decayed``, ``interests``, ``key_outcomes``, ``spend``, ``recent``, the behaviour maps: most of a
profile's objects) back into its :class:`~liveprofile.profile.state.Profile`, only for the commit
to write them out again and for the next batch to read the user's row from the resident table
(:mod:`.resident`) rather than from the profile. :class:`ProfileMap`, the type of
``PipelineState.profiles``, lets the step leave them as bytes instead (:meth:`ProfileMap.hold`):
the profile object keeps its other fields, current, while its kernel fields are empty; the
MessagePack the kernel's rows were written as (:mod:`.rowbytes`, what msgspec writes for those
values) is kept beside it. Every read of a profile through the mapping (``[]``, ``get``,
``values``, ``items``, ``pop``, iteration into another dict) decodes the held fields first, so
readers see whole profiles; :func:`peek` gives the object as it is, for the compiled step's reads
of fields other than the kernel's (event count, last event time, standing, scores,
anonymity). :meth:`ProfileMap.rows` writes a held profile's stored bytes with the held
slices in place (``msgspec.Raw``): the bytes of :func:`~liveprofile.profile.state.encode_profile`.
The velocity lists (``v_events``, ``v_purchases``, ``v_items``) are held the same way, apart
(:meth:`ProfileMap.hold_velocity`): the compiled velocity counts read and write them as bytes
(:mod:`.velocitybytes`), so a user's lists stay bytes from batch to batch until something reads
the profile.

>>> import msgspec
>>> from liveprofile.engine.rowbytes import FIELDS, RowFields
>>> from liveprofile.profile.state import Profile, encode_profile
>>> whole = Profile("u1", 0.0, 7.0, 7.0, n=2, counts={"view": 2}, recent=[(7, "view", None, None)])
>>> row = msgspec.msgpack.encode(RowFields(*(getattr(whole, f) for f in FIELDS)))
>>> ends = [1]
>>> for f in FIELDS:
...     ends.append(ends[-1] + len(msgspec.msgpack.encode(getattr(whole, f))))
>>> profiles = ProfileMap()
>>> profiles["u1"] = slim = Profile("u1", 0.0, 7.0, 7.0, n=2)
>>> profiles.hold("u1", slim, row, ends)
>>> peek(profiles, "u1").counts, profiles.held("u1")  # as held: not decoded
({}, True)
>>> profiles.rows(["u1"]) == {"u1": encode_profile(whole)}
True
>>> profiles["u1"] == whole, profiles.held("u1")  # read: decoded first
(True, False)
>>> profiles.rows(["u1"]) == {"u1": encode_profile(whole)}  # still the objects decoded
True
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Any, cast

import msgspec

from liveprofile.engine.rowbytes import FIELDS, RowFields
from liveprofile.engine.velocitybytes import FIELDS as V_FIELDS
from liveprofile.engine.velocitybytes import decode_one, encode_lists
from liveprofile.profile.state import PROFILE_SCHEMA, Profile
from liveprofile.profile.traits import TraitEvaluator

#: where each kernel field sits among a profile's fields (its row is an array of them all)
_AT = tuple(Profile.__struct_fields__.index(name) for name in FIELDS)
#: where the velocity lists sit (:meth:`ProfileMap.hold_velocity`)
_V_AT = tuple(Profile.__struct_fields__.index(name) for name in V_FIELDS)
# ProfileMap.rows writes the runs of held fields of a row as one slice each: where they are
assert _AT == (5, 6, 7, 17, 18, 21, 27, 28) and _V_AT == (22, 23, 24)
assert len(Profile.__struct_fields__) == 29
#: the schema byte, then the header of a MessagePack array of a profile's fields
_HEADER = bytes([PROFILE_SCHEMA, 0xDC, 0, len(Profile.__struct_fields__)])
_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(RowFields)
_MISSING = object()
_types = {f.name: f.type for f in msgspec.structs.fields(Profile)}
_field_decoders = {f: msgspec.msgpack.Decoder(_types[f]) for f in FIELDS}
#: the kernel fields each field of a trait expression reads (:mod:`liveprofile.profile.traits`)
_READS = {
    "counts": ("counts",),
    "decayed": ("decayed",),
    "interest": ("interests",),
    "monetary_7d": ("spend",),
    "monetary_30d": ("spend",),
    "monetary_90d": ("spend",),
    "item_behaviour": ("behaviour_items",),
    "category_behaviour": ("behaviour_categories",),
    "velocity": V_FIELDS,
}


def update_traits(
    traits: TraitEvaluator, profiles: dict[str, Profile], users: Iterable[str]
) -> None:
    """Recompute the traits of ``users``' profiles: a held profile's traits read a copy with
    only the kernel fields they use decoded (:func:`reading`), the profile stays held."""
    reads = kernel_reads(traits.fields)
    for user in users:
        view = reading(profiles, user, reads)
        traits.update(view)
        dict.__getitem__(profiles, user).traits = view.traits


def kernel_reads(fields: Iterable[str]) -> set[str]:
    """The kernel fields and velocity lists that expressions over ``fields`` (of
    :data:`~liveprofile.profile.traits.FIELDS`: traits, segment rules) read.

    >>> sorted(kernel_reads(["monetary", "monetary_30d", "interest"]))
    ['interests', 'spend']
    """
    return {k for f in fields for k in _READS.get(f, ())}


def reading(profiles: dict[str, Profile], user: str, reads: Collection[str]) -> Any:
    """``user``'s profile for reading only its kernel fields ``reads`` (and its other fields):
    of a held one a copy with those decoded (:meth:`ProfileMap.view`; it stays held), any
    other as it is (None: no profile)."""
    if isinstance(profiles, ProfileMap) and (profiles.held(user) or profiles.holds_velocity(user)):
        return profiles.view(user, reads)
    return profiles.get(user)


def peek(profiles: dict[str, Profile], user: str) -> Profile | None:
    """The profile object of ``user`` in ``profiles`` as it is: a held profile's kernel fields
    (:data:`~liveprofile.engine.rowbytes.FIELDS`) are empty, its other fields current."""
    return dict.get(profiles, user)


class ProfileMap(dict[str, Profile]):
    """Profiles by user, some with their kernel fields held as bytes (see the module's doc)."""

    __slots__ = ("_decoded", "_held", "_vheld")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: user -> (the MessagePack array of the kernel fields, where each field starts in it)
        self._held: dict[str, tuple[bytes, list[int]]] = {}
        #: held rows decoded since :meth:`fresh`, with the values decoded from them
        self._decoded: dict[str, tuple[bytes, list[int], Any]] = {}
        #: user -> (the MessagePack array of the velocity lists, where each list starts in it)
        self._vheld: dict[str, tuple[bytes, list[int]]] = {}

    # -- the compiled step's side --------------------------------------------------------------

    def fresh(self) -> None:
        """Forget the rows decoded so far (a batch's write-back starts)."""
        self._decoded = {}

    def hold(self, user: str, p: Profile, row: bytes, starts: list[int]) -> None:
        """``p`` (the profile of ``user`` here) takes the kernel fields written as ``row`` (a
        MessagePack array of :data:`FIELDS`; field ``k`` from ``starts[k]`` to
        ``starts[k + 1]``); its own kernel fields are emptied until something reads it."""
        held = self._held
        if user not in held:  # else emptied already
            p.counts, p.decayed, p.interests, p.key_outcomes = {}, {}, {}, {}
            p.spend, p.recent, p.behaviour_items, p.behaviour_categories = {}, [], {}, {}
            if self._decoded:
                self._decoded.pop(user, None)
        held[user] = (row, starts)

    def hold_velocity(self, user: str, p: Profile, row: bytes, starts: list[int]) -> None:
        """``p`` (the profile of ``user`` here) takes the velocity lists written as ``row`` (a
        MessagePack array of ``v_events``, ``v_purchases``, ``v_items``; list ``k`` from
        ``starts[k]`` to ``starts[k + 1]``); its own lists are emptied until something reads
        it."""
        vheld = self._vheld
        if user not in vheld:  # else emptied already
            p.v_events, p.v_purchases, p.v_items = [], [], []
        vheld[user] = (row, starts)

    def velocity_rows(self, users: Iterable[str], profiles: Iterable[Profile]) -> list[bytes]:
        """The MessagePack array of the velocity lists of each of ``users`` (whose profile
        objects here are ``profiles``): as held, or written from the lists."""
        vheld = self._vheld
        out = []
        for user, p in zip(users, profiles, strict=True):
            entry = vheld.get(user)
            out.append(entry[0] if entry is not None else encode_lists(_lists(p)))
        return out

    def settle_velocity(self, users: Iterable[str]) -> None:
        """Forget the held velocity lists of ``users``: the caller wrote their lists."""
        vheld = self._vheld
        if vheld:
            for user in users:
                vheld.pop(user, None)

    def held(self, user: str) -> bool:
        """Whether ``user``'s kernel fields are held as bytes."""
        return user in self._held

    def holds_velocity(self, user: str) -> bool:
        """Whether ``user``'s velocity lists are held as bytes."""
        return user in self._vheld

    def settle(self, user: str) -> None:
        """Forget ``user``'s held bytes: the caller wrote every kernel field of the profile."""
        self._held.pop(user, None)
        self._decoded.pop(user, None)

    def rows(self, users: Iterable[str]) -> dict[str, bytes]:
        """The stored bytes of the held profiles among ``users``, and of those decoded since
        :meth:`fresh` whose kernel fields are still the objects decoded (read, e.g. by traits,
        not replaced: nothing between a batch's write-back and its commit changes them in
        place); then forgets the decoded rows."""
        out: dict[str, bytes] = {}
        held, decoded, vheld, Raw = self._held, self._decoded, self._vheld, msgspec.Raw
        astuple, encode = msgspec.structs.astuple, _encoder.encode
        for user in users:
            entry = held.get(user)
            if entry is not None:
                row, starts = entry
                t = astuple(dict.__getitem__(self, user))
            else:
                again = decoded.get(user)
                if again is None:
                    continue
                row, starts, x = again
                t = astuple(dict.__getitem__(self, user))
                if any(t[at] is not getattr(x, f) for at, f in zip(_AT, FIELDS, strict=True)):
                    continue
            # each run of fields held side by side as one slice; the array then has fewer
            # entries than the profile's fields, which its header (always 16-bit) is set to
            view = memoryview(row)
            a, b, c, d = starts[3], starts[5], starts[6], starts[8]
            v = vheld.get(user)
            if v is None:
                velocity = t[22:25]
            else:
                vs = v[1]
                velocity = (Raw(memoryview(v[0])[vs[0] : vs[3]]),)
            values = [
                *t[:5], Raw(view[starts[0] : a]), *t[8:17], Raw(view[a:b]), t[19], t[20],
                Raw(view[b:c]), *velocity, t[25], t[26], Raw(view[c:d]),
            ]  # fmt: skip
            out[user] = _HEADER + encode(values)[3:]
        self._decoded = {}
        return out

    def view(self, user: str, fields: Collection[str]) -> Profile:
        """A copy of ``user``'s profile with its held kernel ``fields`` and velocity lists
        decoded (the other held ones empty), for reading those; the profile stays held."""
        p = dict.__getitem__(self, user)
        decoded = {}
        entry = self._held.get(user)
        if entry is not None:
            row, starts = entry
            for k, f in enumerate(FIELDS):
                if f in fields:
                    decoded[f] = _field_decoders[f].decode(row[starts[k] : starts[k + 1]])
        v = self._vheld.get(user)
        if v is not None and any(f in fields for f in V_FIELDS):
            decoded.update(zip(V_FIELDS, decode_one(v[0]), strict=True))
        return msgspec.structs.replace(p, **decoded)

    def move_to_end(self, user: str) -> None:
        """Make ``user`` the most recently added, held or not."""
        dict.__setitem__(self, user, dict.pop(self, user))

    def _decode(self, user: str, p: Profile) -> Profile:
        entry = self._held.pop(user, None)
        if entry is not None:
            row, starts = entry
            x = _decoder.decode(row)
            self._decoded[user] = (row, starts, x)
            p.counts, p.decayed, p.interests = x.counts, x.decayed, x.interests
            p.key_outcomes, p.spend, p.recent = x.key_outcomes, x.spend, x.recent
            p.behaviour_items, p.behaviour_categories = x.behaviour_items, x.behaviour_categories
        v = self._vheld.pop(user, None)
        if v is not None:
            p.v_events, p.v_purchases, p.v_items = decode_one(v[0])
        return p

    # -- every other reader: whole profiles ----------------------------------------------------

    def __getitem__(self, user: str) -> Profile:
        p = dict.__getitem__(self, user)
        return self._decode(user, p) if user in self._held or user in self._vheld else p

    def get(self, user: str, default: Any = None) -> Any:
        p = dict.get(self, user, _MISSING)
        if p is _MISSING:
            return default
        if user in self._held or user in self._vheld:
            return self._decode(user, cast(Profile, p))
        return p

    def __setitem__(self, user: str, p: Profile) -> None:
        self._held.pop(user, None)
        self._decoded.pop(user, None)
        self._vheld.pop(user, None)
        dict.__setitem__(self, user, p)

    def __delitem__(self, user: str) -> None:
        dict.__delitem__(self, user)
        self._held.pop(user, None)
        self._decoded.pop(user, None)
        self._vheld.pop(user, None)

    def pop(self, user: str, *default: Any) -> Any:
        if user in self._held or user in self._vheld:
            self[user]  # decoded first
        return dict.pop(self, user, *default)

    def popitem(self) -> tuple[str, Profile]:
        user = next(reversed(self))
        return user, self.pop(user)

    def setdefault(self, user: str, default: Any = None) -> Any:
        if user in self:
            return self[user]
        self[user] = default
        return default

    def clear(self) -> None:
        dict.clear(self)
        self._held.clear()
        self._decoded.clear()
        self._vheld.clear()

    def __iter__(self) -> Iterator[str]:
        # not dict's own iterator, so that copying into another dict reads through ``[]``
        return iter(list(dict.keys(self)))

    def values(self) -> Any:
        return [self[u] for u in list(dict.keys(self))]

    def items(self) -> Any:
        return [(u, self[u]) for u in list(dict.keys(self))]

    def copy(self) -> dict[str, Profile]:
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and dict(self.items()) == dict(other.items())

    __hash__ = None

    def __reduce__(self) -> Any:
        return (ProfileMap, (dict(self.items()),))


def _lists(p: Profile) -> tuple[Any, Any, Any]:
    return p.v_events, p.v_purchases, p.v_items

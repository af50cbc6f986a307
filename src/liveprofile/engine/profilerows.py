"""Profile rows for the commit, with the compiled step's own bytes for the fields it owns.

The compiled step writes the fields of a touched profile that its kernel owns (``counts``,
``decayed``, ``interests``, ``key_outcomes``, ``spend``, ``recent`` and the behaviour maps: most
of a profile's bytes) as MessagePack, and msgspec decodes them into the profile
(:func:`liveprofile.engine.rowbytes.row_fields_bytes`). Encoding the profile for the commit then
wrote the same values back to MessagePack, one object at a time. :class:`KernelBytes` keeps the
decoded bytes instead, and :meth:`KernelBytes.rows` encodes each profile with those slices in
place of its kernel fields (``msgspec.Raw``): the same bytes as
:func:`~liveprofile.profile.state.encode_profile`, since the compiled writer writes what msgspec
writes for those values (smallest headers and integers, float64 floats).

A slice stands for a field only while the profile still holds the very object decoded from it,
unchanged: the step keeps slices only for a pipeline without expiry, and a profile whose field
is another object than the decoded one is encoded in full. In a batch with the Python
lifecycle's stops (logins, merges, erasures) the slices are those of the batch's last write-back,
after every stop: nothing changes the kernel fields after it. (A batch without stops holds the
bytes in the profiles instead, :mod:`liveprofile.engine.lazyprofiles`.)

>>> import msgspec, numpy as np
>>> from liveprofile.engine.rowbytes import FIELDS, RowFields
>>> from liveprofile.profile.state import Profile, encode_profile
>>> x = RowFields({"view": 2}, {"view": 1.5}, {}, {}, {}, [(7, "view", None, None)], {}, {})
>>> blob = msgspec.msgpack.encode([x])
>>> x = msgspec.msgpack.decode(blob, type=list[RowFields])[0]
>>> ends = np.cumsum([2] + [len(msgspec.msgpack.encode(getattr(x, f))) for f in FIELDS])
>>> kept = KernelBytes()
>>> kept.keep(blob, ends[None, :], ["u1"], [x])
>>> p = Profile("u1", 0.0, 7.0, 7.0, n=2)
>>> for f in FIELDS:
...     setattr(p, f, getattr(x, f))
>>> kept.rows({"u1": p}, {"u1"}) == {"u1": encode_profile(p)}
True
>>> p.counts = {"view": 3}  # another object: no slice for this profile
>>> kept.rows({"u1": p}, {"u1"})
{}
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import msgspec

from liveprofile.engine.rowbytes import FIELDS
from liveprofile.profile.state import PROFILE_SCHEMA, Profile

#: where each kernel field sits among a profile's fields (its row is an array of them all)
_AT = tuple(Profile.__struct_fields__.index(name) for name in FIELDS)
_SCHEMA = bytes([PROFILE_SCHEMA])
_encoder = msgspec.msgpack.Encoder()


class KernelBytes:
    """The kernel fields' bytes of the profiles one batch wrote back (see the module's doc)."""

    def __init__(self) -> None:
        self._view = memoryview(b"")
        #: user -> (the row's field offsets, the values decoded from them)
        self._rows: dict[str, tuple[list[int], Any]] = {}

    def clear(self) -> None:
        self._view = memoryview(b"")
        self._rows = {}

    def keep(self, blob: bytes, offsets: Any, users: Sequence[str], decoded: Sequence[Any]) -> None:
        """Keep ``blob``'s rows: row ``j`` of ``users[j]``, decoded as ``decoded[j]``, its
        field ``k`` from ``offsets[j, k]`` to ``offsets[j, k + 1]``."""
        self._view = memoryview(blob)
        self._rows = dict(zip(users, zip(offsets.tolist(), decoded, strict=True), strict=True))

    def rows(self, profiles: Mapping[str, Profile], users: Collection[str]) -> dict[str, bytes]:
        """The rows of ``users`` whose kernel fields are still the objects decoded; the others
        are left to :func:`~liveprofile.profile.state.encode_profile`."""
        out: dict[str, bytes] = {}
        view, kept, Raw = self._view, self._rows, msgspec.Raw
        astuple, encode = msgspec.structs.astuple, _encoder.encode
        for user in users:
            entry = kept.get(user)
            p = profiles.get(user)
            if entry is None or p is None:
                continue
            offs, x = entry
            values = list(astuple(p))
            for k, at in enumerate(_AT):
                if values[at] is not getattr(x, FIELDS[k]):
                    break
                values[at] = Raw(view[offs[k] : offs[k + 1]])
            else:
                out[user] = _SCHEMA + encode(values)
        return out

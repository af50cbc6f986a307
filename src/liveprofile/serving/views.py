"""Readable views of stored profiles, as of the latest event time in the store.

>>> from liveprofile.store import MemoryStore
>>> from liveprofile.profile.state import Profile, encode_profile
>>> store = MemoryStore()
>>> ann = Profile("ann", anchor=0.0, first_ts=0.0, last_ts=60.0, n=1)
>>> store.commit({PROFILES: {"ann": encode_profile(ann)}}, {})
>>> view = profile_view(store, "ann")
>>> view["user"], view["as_of"], view["frequency"]
('ann', 60.0, 0)
>>> profile_view(store, "bob", where="shop.db")
Traceback (most recent call last):
...
liveprofile.errors.ProfileNotFound: no profile for user 'bob' in shop.db
"""

from __future__ import annotations

from typing import Any

import msgspec

from liveprofile.errors import ProfileNotFound
from liveprofile.profile.population import Population, standing
from liveprofile.profile.state import ProfileUpdater, decode_profile
from liveprofile.store.base import Store
from liveprofile.store.layout import (
    CHECKPOINT,
    POPULATION,
    PROFILES,
    decode_checkpoint,
    stored_config,
)


def profile_view(store: Store, user: str, *, where: object = None) -> dict[str, Any]:
    """One user's profile as a readable dict, as of the latest event time in ``store``
    (``where`` names the store in the error when there is no such profile)."""
    (blob,) = store.read(PROFILES, [user])
    if blob is None:
        raise ProfileNotFound(
            f"no profile for user {user!r} in {store if where is None else where}"
        )
    config = stored_config(store)
    ckpt_blob = store.get_meta(CHECKPOINT)
    profile = decode_profile(blob, user)
    as_of = profile.last_ts
    if ckpt_blob is not None:
        as_of = max(as_of, decode_checkpoint(ckpt_blob).watermark)
    pop_blob = store.get_meta(POPULATION)
    rfm = None
    if pop_blob is not None:
        population = msgspec.msgpack.decode(pop_blob, type=Population)
        rfm = population.scores(standing(profile))
    return ProfileUpdater(config.profile, config.risk).view(profile, at=as_of, rfm=rfm)

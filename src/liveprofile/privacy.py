"""Privacy: export everything stored about a user, and erase a user.

Erasure is a command event (``type: "$forget"``) that goes through the pipeline like any other
event, so it is applied in order with the user's events, exactly once, and replays reproduce it.
It deletes the profile, its segment memberships, its identity links and the queued segment
changes about the user (and its aliases). On the embedded store :func:`erase` applies it at once;
on Redis it is appended to the user's partition stream and the worker applies it.

What erasure does not touch: the online models and item statistics (aggregates over all users),
and open delayed examples of the user, which keep the user id until their window closes (at most
the task's window) and are then learned and dropped. Dead letters keep the raw input they
rejected.

>>> import tempfile, pathlib
>>> from liveprofile.api import replay
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "ev.jsonl").write_text(
...     '{"event_id": "1", "user_id": "ann", "type": "view", "ts": 0, "category": "tea"}\\n')
>>> _ = replay(folder / "ev.jsonl", store=folder / "p.db", progress=False)
>>> export_user(folder / "p.db", "ann")["profile"]["interests"]
{'tea': 1.0}
>>> erase(folder / "p.db", ["ann"])["erased"]
['ann']
>>> export_user(folder / "p.db", "ann")
Traceback (most recent call last):
...
liveprofile.errors.ProfileNotFound: nothing is stored about user 'ann'
"""

from __future__ import annotations

import math
import os
from typing import Any

import msgspec

from liveprofile.engine.changes import read_changes
from liveprofile.engine.local import LocalRunner
from liveprofile.errors import ProfileNotFound
from liveprofile.events.schema import forget_event
from liveprofile.events.sources import Batch
from liveprofile.profile.behaviour import unpack
from liveprofile.profile.state import decode_profile
from liveprofile.serving.views import profile_view
from liveprofile.store import REDIS_SCHEMES, open_store
from liveprofile.store.base import Store
from liveprofile.store.layout import (
    ALIASES,
    PROFILES,
    check_config,
    default_changes,
    default_dead_letters,
    segment_namespace,
    stored_config,
)

PathLike = str | os.PathLike[str]
#: the source name erasures applied directly to an embedded store are counted under
SOURCE = "privacy"


def export_user(store: PathLike, user: str) -> dict[str, Any]:
    """Everything stored about ``user``: the profile (readable view and stored fields),
    segment memberships, identity links and the segment changes about the user."""
    text = str(store)
    backend = open_store(text, read_only=True)
    try:
        (linked,) = backend.read(ALIASES, [user])
        (blob,) = backend.read(PROFILES, [user])
        if blob is None and linked is None:
            raise ProfileNotFound(f"nothing is stored about user {user!r}")
        out: dict[str, Any] = {"user_id": user, "linked_to": linked and linked.decode()}
        out["profile"] = None if blob is None else profile_view(backend, user)
        out["stored"] = None if blob is None else _fields(decode_profile(blob, user))
        out["segments"] = _memberships(backend, user)
        ids = {user, *(out["stored"]["aliases"] if out["stored"] else ())}
        out["segment_changes"] = [c for c in _changes(backend, text) if c["user_id"] in ids]
        return out
    finally:
        backend.close()


def _fields(p: msgspec.Struct) -> dict[str, Any]:
    """Every stored field of a profile by name."""
    named = {name: getattr(p, name) for name in p.__struct_fields__}
    for name in ("behaviour_items", "behaviour_categories"):  # packed floats, as numbers
        if name in named:
            named[name] = {key: list(unpack(v)) for key, v in named[name].items()}
    return msgspec.to_builtins(named, str_keys=True)  # type: ignore[no-any-return]


def _memberships(store: Store, user: str) -> dict[str, float]:
    out = {}
    for name in stored_config(store).segments:
        (entered,) = store.read(segment_namespace(name), [user])
        if entered is not None:
            out[name] = msgspec.msgpack.decode(entered)
    return out


def _changes(store: Store, text: str) -> list[dict[str, Any]]:
    if text.startswith(REDIS_SCHEMES):  # a Redis store (open_store)
        from liveprofile.redis.privacy import stream_changes

        return stream_changes(store)
    return read_changes(default_changes(text))


def erase(store: PathLike, users: list[str], *, partitions: int | None = None) -> dict[str, Any]:
    """Erase ``users``: applied now on an embedded store; queued on Redis (to the users'
    partition streams, for the worker). Returns what was done."""
    text = str(store)
    if text.startswith(REDIS_SCHEMES):  # a worker applies it, in order
        from liveprofile.redis.privacy import queue_erasure

        return queue_erasure(text, users, partitions)
    return _apply_erasure(text, users)


def _apply_erasure(store: str, users: list[str]) -> dict[str, Any]:
    backend = open_store(store)
    backend.setup()
    config = stored_config(backend)
    check_config(backend, config)
    runner = LocalRunner(
        config, backend, default_dead_letters(store), changes=default_changes(store)
    )
    try:
        ckpt = runner.state.checkpoint
        ts = ckpt.watermark if math.isfinite(ckpt.watermark) else 0.0
        found = backend.read(PROFILES, users)
        linked = backend.read(ALIASES, users)
        events = [forget_event(u, ts) for u in users]
        offset = ckpt.offsets.get(SOURCE, 0) + len(events)
        runner.process(SOURCE, Batch(events=events, dead_letters=[], offset=offset))
    finally:
        runner.close()
    erased = [u for u, p, a in zip(users, found, linked, strict=True) if p is not None or a]
    return {"status": "erased", "erased": erased, "unknown": [u for u in users if u not in erased]}

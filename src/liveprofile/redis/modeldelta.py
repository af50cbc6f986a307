"""A one-writer Redis store's models as a whole checkpoint plus the deltas written since.

A model update (:mod:`liveprofile.learn.tracked`) is written, inside the commit's
``MULTI``/``EXEC``, as one more entry of the list ``{prefix}:meta_delta:{name}`` when it follows
the update this store wrote last; otherwise its whole checkpoint goes to the ``{prefix}:meta``
hash as before and the list starts again with a new random token (entry 0). Before a delta, the
list is ``WATCH``ed and its token and length checked, so a delta never lands after a write of
another writer (the commit then fails, or the model is written whole). When the deltas add up
to half of the whole checkpoint the next commit writes it whole. Reading a model
(:func:`read_model`) is one transaction: the whole checkpoint and the list, replayed
(:func:`~liveprofile.learn.ckptdelta.replay`). A whole blob written by any commit clears the
model's list (:func:`clear_deltas`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import redis

from liveprofile.errors import StoreError
from liveprofile.store.base import MODEL_PREFIX

if TYPE_CHECKING:
    from liveprofile.learn.tracked import ModelUpdate

#: a list's length and first entry, for every list named in KEYS
_HEADS = """
local out = {}
for i, key in ipairs(KEYS) do
  out[2 * i - 1] = redis.call('LLEN', key)
  out[2 * i] = redis.call('LINDEX', key, 0) or false
end
return out
"""


@dataclass(frozen=True)
class Chain:
    """What a store last wrote of a model: the list's token, the deltas after the whole
    write and their bytes, the whole's size, and the update (tracker, number) it wrote."""

    token: bytes
    deltas: int
    delta_bytes: int
    size: int
    source: bytes
    number: int


def delta_key(prefix: str, name: str) -> str:
    return f"{prefix}:meta_delta:{name}"


def read_model(client: redis.Redis, meta_key: str, list_key: str, name: str) -> bytes | None:
    """The model blob ``name``: its whole checkpoint with its deltas replayed (None: none)."""
    pipe = client.pipeline(transaction=True)
    pipe.hget(meta_key, name)
    pipe.lrange(list_key, 1, -1)
    whole, deltas = pipe.execute()
    if whole is None:
        return None
    if not deltas:
        return bytes(whole)
    from liveprofile.learn import ckptdelta  # numpy: only for models with deltas

    try:
        return ckptdelta.replay(bytes(whole), (bytes(d) for d in deltas))
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise StoreError(f"model {name} in Redis ({meta_key}) is damaged ({exc})") from None


def plan(
    pipe: Any, prefix: str, chains: Mapping[str, Chain], updates: Mapping[str, ModelUpdate]
) -> dict[str, tuple[Chain, bytes, bool]]:
    """Per model: what the store will know after the commit, the bytes to write and whether
    they are a delta. Deltas' lists are ``WATCH``ed on ``pipe`` (then in immediate mode) and
    checked in one round trip."""
    candidates = {}
    for name, update in updates.items():
        last = chains.get(name)
        if last is not None and update.delta_after(
            last.source, last.number, last.delta_bytes, last.size
        ):
            candidates[name] = last
    if candidates:
        keys = [delta_key(prefix, name) for name in candidates]
        pipe.watch(*keys)
        heads = cast(list[Any], pipe.eval(_HEADS, len(keys), *keys))
        for k, (name, last) in enumerate(list(candidates.items())):
            length, token = int(heads[2 * k]), heads[2 * k + 1]
            if length != last.deltas + 1 or token is None or bytes(token) != last.token:
                del candidates[name]  # written by another writer since: write it whole
    out: dict[str, tuple[Chain, bytes, bool]] = {}
    for name, update in updates.items():
        last = candidates.get(name)
        if last is not None and update.delta is not None:
            delta = update.delta
            after = replace(
                last,
                deltas=last.deltas + 1,
                delta_bytes=last.delta_bytes + len(delta),
                number=update.number,
            )
            out[name] = (after, delta, True)
        else:
            blob = update.whole()
            token = secrets.token_bytes(8)
            out[name] = (Chain(token, 0, 0, len(blob), update.source, update.number), blob, False)
    return out


def queue(
    pipe: Any, prefix: str, meta_key: str, plans: Mapping[str, tuple[Chain, bytes, bool]]
) -> None:
    """Queue the planned writes on ``pipe`` (inside its ``MULTI``)."""
    for name, (chain, value, is_delta) in plans.items():
        key = delta_key(prefix, name)
        if is_delta:
            pipe.rpush(key, value)
        else:
            pipe.hset(meta_key, name, value)
            pipe.delete(key)
            pipe.rpush(key, chain.token)


def clear_deltas(pipe: Any, prefix: str, names: Any) -> None:
    """Queue dropping the deltas of the model blobs among ``names`` written whole."""
    keys = [delta_key(prefix, n) for n in names if n.startswith(MODEL_PREFIX)]
    if keys:
        pipe.delete(*keys)

"""The stored-state layout: every namespace and meta blob a pipeline keeps in a store, the
checkpoint committed with each batch, the config a store was built with, the schema checks, and
the files kept beside a store. Everything that reads or writes pipeline state names it from here.

Rows live in namespaces (``store.read(PROFILES, [user])``); single blobs are meta entries
(``store.get_meta(CHECKPOINT)``). The byte formats of profiles and items are their codecs'
(:mod:`liveprofile.profile.state`, :mod:`liveprofile.profile.items`).

>>> from liveprofile.store.memory import MemoryStore
>>> store = MemoryStore()
>>> read_checkpoint(store).seq, read_checkpoint(store).watermark
(0, -inf)
>>> store.commit({}, {CHECKPOINT: encode_checkpoint(Checkpoint(seq=3, watermark=60.0))})
>>> read_checkpoint(store).seq, read_checkpoint(store).watermark
(3, 60.0)
>>> segment_namespace("vip"), model_meta("convert"), metrics_meta("convert")
('segment:vip', 'model/convert', 'metrics/convert')
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from liveprofile.config import PipelineConfig
from liveprofile.errors import ConfigError, LiveprofileError, StateVersionError
from liveprofile.store.base import MODEL_PREFIX, Store
from liveprofile.store.codec import damaged

# -- namespaces: rows keyed by user, item or sequence number -----------------------------------

#: user -> profile (:func:`liveprofile.profile.state.encode_profile`)
PROFILES = "profile"
#: item -> item statistics (:func:`liveprofile.profile.items.encode_item`)
ITEMS = "item"
#: batch sequence number (12 digits) -> the pending examples that batch opened
PENDING = "pending"
#: batch sequence number (12 digits) -> the event ids that batch added to the de-duplication window
DEDUP = "dedup"
#: anonymous id -> the user id it was linked to (UTF-8)
ALIASES = "alias"
#: the identity links by target: a key set (:data:`~liveprofile.store.base.KEYSET_PREFIX`) with
#: the key :func:`link_index_key` for each row of :data:`ALIASES`, written in the same commits,
#: so the links leading to an id are found without a scan (:func:`link_index_prefix`)
LINKS_BY_TARGET = "keys:linkto"
#: "day:seq" -> users last seen that day, indexed by that batch (time-to-live expiry)
EXPIRY = "expiry"
#: stream entry key -> a dead letter the Redis worker stored (JSON)
DEAD_LETTERS = "deadletter"
#: the prefix of the namespaces listing a segment's members (see :func:`segment_namespace`)
SEGMENT_PREFIX = "segment:"
#: scope -> its latest checkpoint: the registry of the scopes (partitions) workers keep in a
#: shared store, written in each scoped commit (:class:`liveprofile.store.scoped.ScopedStore`)
SCOPES = "scope"

# -- meta blobs ---------------------------------------------------------------------------------

#: the :class:`Checkpoint`, committed with every batch
CHECKPOINT = "checkpoint"
#: the :class:`~liveprofile.config.PipelineConfig` the store was built with (JSON)
CONFIG = "config"
#: the population histograms behind RFM scores
POPULATION = "population"
#: (watermark, {segment: members}) after each batch, thinned
SEGMENT_HISTORY = "segments/history"
#: the anomaly detector, when ``risk.anomaly`` is on
ANOMALY = "risk/anomaly"

#: namespaces and meta blobs that workers sharing a store share; the rest is kept per worker
#: (:class:`liveprofile.store.scoped.ScopedStore`)
SHARED_NAMESPACES = frozenset({PROFILES, DEAD_LETTERS, SCOPES})
SHARED_META = frozenset({CONFIG})
#: names of shared meta blobs by their start: each task's learned ranker (one per task, read by
#: every partition's view, see :func:`ranker_meta`)
SHARED_META_PREFIXES = ("ranker/",)


def shared_meta(name: str) -> bool:
    """Whether a meta blob is one for all workers sharing a store (not kept per scope).

    >>> shared_meta(CONFIG), shared_meta(ranker_meta("convert")), shared_meta(CHECKPOINT)
    (True, True, False)
    """
    return name in SHARED_META or name.startswith(SHARED_META_PREFIXES)


def ranker_meta(task: str) -> str:
    """The meta blob of the ranker learned for ``task``'s recommendations."""
    return f"{SHARED_META_PREFIXES[0]}{task}"


#: the version of the checkpoint and of the state layout it describes; 2: the links are
#: indexed by target (:data:`LINKS_BY_TARGET`)
STATE_SCHEMA = 2
#: the versions this one reads: a store of version 1 has links without their index, which is
#: built from them when first needed (:func:`links_indexed`)
READABLE_SCHEMAS = (1, 2)


def link_index_prefix(target: str) -> str:
    """The start of the keys of :data:`LINKS_BY_TARGET` for the links that lead to ``target``:
    its length, so no other id's keys start the same way.

    >>> link_index_prefix("u1"), link_index_key("u1", "visitor-7")
    ('2:u1:', '2:u1:visitor-7')
    >>> link_index_source("2:u1:", link_index_key("u1", "a:b"))
    'a:b'
    """
    return f"{len(target)}:{target}:"


def link_index_key(target: str, source: str) -> str:
    """The key of :data:`LINKS_BY_TARGET` for the link ``source -> target``."""
    return f"{link_index_prefix(target)}{source}"


def link_index_source(prefix: str, key: str) -> str:
    """The linked id of a key found under ``prefix`` (:func:`link_index_prefix`)."""
    return key[len(prefix) :]


def segment_namespace(segment: str) -> str:
    """The store namespace that lists a segment's members (key: user, value: entry time)."""
    return f"{SEGMENT_PREFIX}{segment}"


def model_meta(task: str) -> str:
    """The meta blob of a task's learner."""
    return f"{MODEL_PREFIX}{task}"


def model_namespace(task: str) -> str:
    """The rows of a task's shared model (Kafka workers and the Flink job with
    ``run.shared_model``). One row per coordinate: field :func:`coordinate_field` (the index in
    lowercase hex), value the coordinate's float64s of every full-size array of the learner, in
    the header's order, little-endian (16 bytes for FTRL's ``z`` and ``n``). Each value of a
    smaller array is a row ``"{array}:{k}"`` (OGD's step count ``"t:0"``, the regression
    learner's target statistics ``"stats:0"`` to ``"stats:2"``), and :data:`MODEL_LEARNED`
    counts the examples learned by all workers (a decimal count). Its header is the meta blob
    :func:`model_meta` (:class:`ModelHeader`)."""
    return f"model:{task}"


def coordinate_field(index: int) -> str:
    """The row of a shared model's coordinate ``index`` (see :func:`model_namespace`).

    >>> coordinate_field(1234), parse_model_field("4d2"), parse_model_field("t:0")
    ('4d2', (None, 1234), ('t', 0))
    """
    return format(index, "x")


def parse_model_field(field: str) -> tuple[str | None, int]:
    """``(None, index)`` of a coordinate's row, ``(array, index)`` of the row of a smaller
    array's value, ``(MODEL_LEARNED, -1)`` of the count (see :func:`model_namespace`)."""
    if field == MODEL_LEARNED:
        return MODEL_LEARNED, -1
    name, sep, index = field.partition(":")
    if sep:
        return name, int(index)
    return None, int(field, 16)


#: the row of a shared model counting the examples it learned (integer text, ``HINCRBY``)
MODEL_LEARNED = "learned"
#: the version of the shared model's layout (its header and rows); 2: one row per coordinate
#: holding all the learner's arrays (1: one row per array and coordinate, ``"z:1234"``)
MODEL_SCHEMA = 2


class ModelHeader(msgspec.Struct):
    """The meta blob of a shared model: the learner's kind and hyperparameters and the names
    of its arrays, whose coordinates are rows of :func:`model_namespace`.

    >>> header = ModelHeader(kind="ftrl", params={"bits": 4}, arrays=["z", "n"])
    >>> decode_model_header(encode_model_header(header)) == header
    True
    >>> decode_model_header(msgspec.msgpack.encode({"schema": 2, "kind": "ftrl"})) is None
    True
    >>> try:
    ...     decode_model_header(msgspec.msgpack.encode({"schema": 1, "layout": "shared"}))
    ... except StateVersionError as exc:
    ...     print(str(exc)[:47])
    shared model has schema 1, this version reads 2
    """

    kind: str
    params: dict[str, Any]
    arrays: list[str]
    layout: str = "shared"
    schema: int = MODEL_SCHEMA


def encode_model_header(header: ModelHeader) -> bytes:
    return msgspec.msgpack.encode(header)


def decode_model_header(blob: bytes) -> ModelHeader | None:
    """The shared model's header in ``blob``, or None if ``blob`` is a whole-model checkpoint
    (:func:`liveprofile.learn.registry.dump_learner`, the layout of one-writer stores); a
    header of another schema is refused."""
    with damaged("meta row", "model"):
        fields = msgspec.msgpack.decode(blob)
        if not isinstance(fields, dict) or fields.get("layout") != "shared":
            return None
        if fields.get("schema") != MODEL_SCHEMA:
            raise StateVersionError(
                f"shared model has schema {fields.get('schema')}, this version reads "
                f"{MODEL_SCHEMA} (its coordinates are stored another way): replay the events "
                "into a new store (another --prefix)"
            )
        return msgspec.msgpack.decode(blob, type=ModelHeader)


def metrics_meta(task: str) -> str:
    """The meta blob of a task's prequential metrics and its drift detector
    (:meth:`liveprofile.learn.metrics.Prequential.to_bytes`, versioned by its own
    ``METRICS_VERSION``)."""
    return f"metrics/{task}"


# -- the checkpoint -----------------------------------------------------------------------------


class Checkpoint(msgspec.Struct):
    """Scalars committed with every batch."""

    schema: int = STATE_SCHEMA
    seq: int = 0
    offsets: dict[str, int] = {}
    watermark: float = float("-inf")
    events: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    dead_letter_bytes: int = 0
    dedup_chunks: list[tuple[int, int]] = []  # (seq, ids) of the persisted dedup rows
    pending_chunks: list[tuple[int, float]] = []  # (seq, latest deadline) of the pending logs
    links: int = 0  # identity links ever made
    expiry_chunks: list[tuple[int, int]] = []  # (day, seq) of the last-seen index rows


def merge_checkpoints(checkpoints: Iterable[Checkpoint]) -> Checkpoint:
    """The checkpoints of a store's scopes (partitions) as one: counters and sequence numbers
    added up (the sum moves whenever any scope commits), the latest watermark, the offsets side
    by side. Chunk lists stay per scope and are left out.

    >>> one = merge_checkpoints([Checkpoint(seq=2, events=10, watermark=5.0, offsets={"a": 3}),
    ...                          Checkpoint(seq=1, events=4, watermark=9.0, offsets={"b": 1})])
    >>> one.seq, one.events, one.watermark, one.offsets
    (3, 14, 9.0, {'a': 3, 'b': 1})
    """
    total = Checkpoint(offsets={})
    for ckpt in checkpoints:
        total.seq += ckpt.seq
        total.events += ckpt.events
        total.duplicates += ckpt.duplicates
        total.dead_letters += ckpt.dead_letters
        total.dead_letter_bytes += ckpt.dead_letter_bytes
        total.links += ckpt.links
        total.watermark = max(total.watermark, ckpt.watermark)
        total.offsets.update(ckpt.offsets)
    return total


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    return msgspec.msgpack.encode(checkpoint)


def decode_checkpoint(blob: bytes | None) -> Checkpoint:
    """The checkpoint in ``blob`` (an empty one for ``None``, before the first commit); a blob
    of another schema version is refused.

    >>> decode_checkpoint(encode_checkpoint(Checkpoint(schema=9)))
    Traceback (most recent call last):
    ...
    liveprofile.errors.StateVersionError: store has state schema 9, this version reads 1 and 2: ...
    """
    if blob is None:
        return Checkpoint()
    with damaged("meta row", CHECKPOINT):
        checkpoint = msgspec.msgpack.decode(blob, type=Checkpoint)
    if checkpoint.schema not in READABLE_SCHEMAS:
        raise StateVersionError(
            f"store has state schema {checkpoint.schema}, this version reads "
            f"{' and '.join(map(str, READABLE_SCHEMAS))}: replay the events into a new store"
        )
    return checkpoint


def links_indexed(checkpoint: Checkpoint) -> bool:
    """Whether every link of the store is in :data:`LINKS_BY_TARGET` (a store written before
    the index, schema 1, has its index built by the first batch that needs it, which raises
    the schema in its commit).

    >>> links_indexed(Checkpoint()), links_indexed(Checkpoint(schema=1))
    (True, False)
    """
    return checkpoint.schema >= 2


def read_checkpoint(store: Store) -> Checkpoint:
    """The store's committed checkpoint (an empty one before the first commit)."""
    return decode_checkpoint(store.get_meta(CHECKPOINT))


# -- the config a store was built with ----------------------------------------------------------


def check_config(store: Store, config: PipelineConfig) -> None:
    """Record ``config`` in a new store, or refuse a config other than the one it was built with.

    The stored config is read back with today's defaults for settings added since it was
    written, so a store built before a new setting existed opens with that setting's default.
    """
    stored = store.get_meta(CONFIG)
    encoded = msgspec.json.encode(config)
    if stored is None:
        store.commit({}, {CONFIG: encoded})
    elif stored != encoded and _decoded(stored) != config:
        raise ConfigError(
            "this store was built with a different pipeline config; replay into a new store "
            "(--store) or use the config it was built with"
        )


def _decoded(blob: bytes) -> PipelineConfig | None:
    try:
        return msgspec.json.decode(blob, type=PipelineConfig)
    except (msgspec.ValidationError, msgspec.DecodeError, LiveprofileError):
        return None


def stored_config(store: Store) -> PipelineConfig:
    """The config ``store`` was built with (the default config for a store without one)."""
    blob = store.get_meta(CONFIG)
    return PipelineConfig() if blob is None else msgspec.json.decode(blob, type=PipelineConfig)


# -- files kept beside a store ------------------------------------------------------------------

PathLike = str | os.PathLike[str]


def beside_store(store: PathLike, suffix: str) -> Path:
    """A file beside the store file, or for a server store, under ``liveprofile-data/`` named
    after its URL."""
    text = str(store)
    if "://" in text and not text.startswith("sqlite://"):
        name = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")
        return Path("liveprofile-data") / f"{name}.{suffix}"
    return Path(f"{text.removeprefix('sqlite://')}.{suffix}")


def default_dead_letters(store: PathLike) -> Path:
    """Where dead letters go by default: beside the store file, or for a server store, under
    ``liveprofile-data/`` named after its URL.

    >>> str(default_dead_letters("redis://127.0.0.1:6379/0?prefix=shop"))
    'liveprofile-data/redis-127.0.0.1-6379-0-prefix-shop.deadletters.jsonl'
    """
    return beside_store(store, "deadletters.jsonl")


def default_changes(store: PathLike) -> Path:
    """Where segment changes go by default (``profiles.db`` -> ``profiles.db.segments.jsonl``)."""
    return beside_store(store, "segments.jsonl")

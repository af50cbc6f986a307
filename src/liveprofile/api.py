"""The Python API: everything the command line does, as functions.

>>> import tempfile, pathlib, json
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> events = folder / "events.jsonl"
>>> _ = events.write_text("\\n".join(json.dumps(e) for e in [
...     {"event_id": "1", "user_id": "ann", "type": "view", "ts": 1700000000, "item_id": "i1",
...      "category": "shoes"},
...     {"event_id": "2", "user_id": "ann", "type": "purchase", "ts": 1700000600, "item_id": "i1",
...      "category": "shoes", "value": 59.0},
...     {"event_id": "3", "user_id": "bob", "type": "view", "ts": "oops"},
... ]))
>>> result = replay(events, store=folder / "profiles.db", progress=False)
>>> result["events"], result["dead_letters"], result["profiles"]
(2, 1, 1)
>>> profile = read_profile(folder / "profiles.db", "ann")
>>> profile["frequency"], profile["monetary"], list(profile["interests"])
(1, 59.0, ['shoes'])
>>> best = recommend(folder / "profiles.db", "ann", k=1, candidates=["i1", "i2"], task="convert")
>>> [(r["item"], r["category"]) for r in best["items"]]
[('i1', 'shoes')]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from liveprofile.config import PipelineConfig
from liveprofile.engine.core import Core
from liveprofile.engine.local import LocalRunner
from liveprofile.engine.state import PipelineState
from liveprofile.errors import ConfigError, SourceError, StateVersionError
from liveprofile.events.sources import (
    FORMATS,
    Batch,
    CsvSource,
    JsonlSource,
    Source,
    read_item_tags,
)
from liveprofile.learn.registry import dump_learner, load_learner
from liveprofile.serving.ranktrain import PipelineRanker, pipeline_ranker
from liveprofile.serving.views import profile_view
from liveprofile.store import MemoryStore, Store, open_store
from liveprofile.store.layout import (
    check_config,
    default_changes,
    default_dead_letters,
    stored_config,
)

WARM_START_SCHEMA = 1

PathLike = str | os.PathLike[str]


def open_source(
    path: PathLike | None,
    fmt: str | None = None,
    *,
    mapping: Mapping[str, str] | None = None,
    constants: Mapping[str, str] | None = None,
    item_tags: PathLike | None = None,
    item_key: str = "item_id",
    tags_column: str = "tags",
    tags_separator: str = "|",
    limit: int | None = None,
) -> Source:
    """A source by format; the format defaults to the file extension (.jsonl/.json, .csv)."""
    if fmt is None:
        suffix = Path(str(path)).suffix.lower()
        fmt = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(suffix)
        if str(path) == "-":
            fmt = "jsonl"
        if fmt is None:
            raise SourceError(
                f"cannot tell the format of {path}: pass --format ({', '.join(FORMATS)})"
            )
    if fmt == "completejourney":
        from liveprofile.datasets.completejourney import CompleteJourneySource

        return CompleteJourneySource(limit=limit)
    if path is None:
        raise SourceError(f"format {fmt!r} needs a file")
    if fmt == "jsonl":
        return JsonlSource(path)
    if fmt == "movielens":
        from liveprofile.datasets.movielens import movielens_source

        return movielens_source(path)
    if fmt == "csv":
        if not mapping:
            raise SourceError(
                "a CSV source needs a column mapping, e.g. --map user_id=userId --map ts=timestamp"
            )
        tags = (
            read_item_tags(item_tags, item_key, tags_column, tags_separator) if item_tags else None
        )
        return CsvSource(path, mapping, constants=constants, item_tags=tags)
    raise SourceError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def replay(
    source: PathLike | Source,
    *,
    store: PathLike = "liveprofile.db",
    config: PipelineConfig | None = None,
    fmt: str | None = None,
    dead_letters: PathLike | None = None,
    changes: PathLike | None = None,
    warm_start: PathLike | None = None,
    limit: int | None = None,
    progress: bool | Callable[[Batch], None] = True,
) -> dict[str, Any]:
    """Replay a source through the pipeline into a store; return the run summary."""
    config = config or PipelineConfig()
    src = source if not isinstance(source, str | os.PathLike) else open_source(source, fmt)
    backend = open_store(str(store))
    backend.setup()
    check_config(backend, config)
    runner = LocalRunner(
        config,
        backend,
        dead_letters or default_dead_letters(store),
        changes=changes or default_changes(store),
    )
    try:
        if warm_start is not None and runner.state.checkpoint.events == 0:
            load_warm_start(runner.state, warm_start)
        callback = progress if callable(progress) else None
        trainer = pipeline_ranker(backend, config.ranker)
        if progress is True:
            from liveprofile.progress import replay_progress

            with replay_progress(src) as callback:
                stats = runner.run(src, limit=limit, on_batch=_both(trainer, callback))
        else:
            stats = runner.run(src, limit=limit, on_batch=_both(trainer, callback))
        summary = runner.summary(stats)
        if trainer is not None:
            summary["ranker"] = trainer.summary()
        summary["store"] = str(store)
        summary["dead_letter_file"] = str(runner.dead_letters.path)
        if runner.changes is not None:
            summary["segment_changes_file"] = str(runner.changes.path)
        return summary
    finally:
        runner.close()


def _both(
    trainer: PipelineRanker | None, callback: Callable[[Batch], None] | None
) -> Callable[[Batch], None] | None:
    """The pipeline's ranker learning, then the caller's callback, after each batch."""
    if trainer is None:
        return callback

    def both(batch: Batch) -> None:
        trainer.observe(batch)
        if callback is not None:
            callback(batch)

    return both


def read_profile(store: PathLike | Store, user: str) -> dict[str, Any]:
    """One user's profile as a readable dict, as of the latest event time in the store."""
    backend = open_store(str(store), read_only=True) if not isinstance(store, Store) else store
    try:
        return profile_view(backend, user, where=store)
    finally:
        if not isinstance(store, Store):
            backend.close()


def recommend(
    store: PathLike | Store,
    user: str,
    *,
    k: int = 10,
    candidates: Sequence[str] | None = None,
    task: str | None = None,
    top: int = 5,
    rank: str = "learned",
) -> dict[str, Any]:
    """The ``k`` best items for ``user`` by the online model of ``task`` with the live profile
    (weighed with popularity, interest and history as the store's ranker learned, unless
    ``rank="blend"`` or ``rank="model"``), each with its score and its top contributing
    features (``reason``).

    ``candidates`` default to the popular items of the user's strongest interest categories;
    ``task`` defaults to the first item task that has learned from the store's events (see
    :mod:`liveprofile.serving.recommend`).
    """
    from liveprofile.serving.recommend import Recommender

    backend = open_store(str(store), read_only=True) if not isinstance(store, Store) else store
    try:
        return Recommender(backend).recommend(user, k, candidates, task, top, rank=rank)
    finally:
        if not isinstance(store, Store):
            backend.close()


class _WarmStart(msgspec.Struct):
    schema: int
    config: bytes
    models: dict[str, bytes]


def warm_start(
    history: PathLike | Source,
    out: PathLike,
    *,
    config: PipelineConfig | None = None,
    fmt: str | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the task models on a history and save them for a later :func:`replay`."""
    config = config or PipelineConfig()
    src = history if not isinstance(history, str | os.PathLike) else open_source(history, fmt)
    out = Path(out)
    runner = LocalRunner(config, MemoryStore(), out.with_name(out.name + ".deadletters.jsonl"))
    try:
        if progress:
            from liveprofile.progress import replay_progress

            with replay_progress(src) as callback:
                stats = runner.run(src, limit=limit, on_batch=callback)
        else:
            stats = runner.run(src, limit=limit)
        models = {}
        for name, task in runner.state.tasks.items():
            assert task.learner is not None
            models[name] = dump_learner(task.learner)
        blob = _WarmStart(WARM_START_SCHEMA, msgspec.json.encode(config), models)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(msgspec.msgpack.encode(blob))
        summary = runner.summary(stats)
        summary["model_file"] = str(out)
        return summary
    finally:
        runner.close()


def load_warm_start(state: PipelineState, path: PathLike) -> None:
    """Replace the fresh learners of ``state`` with those saved by :func:`warm_start`."""
    try:
        saved = msgspec.msgpack.decode(Path(path).read_bytes(), type=_WarmStart)
    except (OSError, msgspec.DecodeError) as exc:
        raise ConfigError(f"cannot read warm-start models {path}: {exc}") from None
    if saved.schema != WARM_START_SCHEMA:
        raise StateVersionError(f"{path} has schema {saved.schema}, expected {WARM_START_SCHEMA}")
    for name, task in state.tasks.items():
        if name in saved.models:
            task.learner = load_learner(saved.models[name])


__all__ = [
    "FORMATS",
    "Core",
    "check_config",
    "default_changes",
    "default_dead_letters",
    "load_warm_start",
    "open_source",
    "read_profile",
    "recommend",
    "replay",
    "stored_config",
    "warm_start",
]

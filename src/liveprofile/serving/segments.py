"""Segments for the applications that use them: sizes, paged member lists and CSV exports.

Members are read from the store's ``segment:{name}`` namespace (written with every commit), so
these functions work the same on SQLite and Redis, and while a pipeline is running.

>>> from liveprofile.store.layout import check_config
>>> from liveprofile.config import PipelineConfig
>>> from liveprofile.store import MemoryStore
>>> store = MemoryStore()
>>> check_config(store, PipelineConfig(segments={"vip": "monetary > 100"}))
>>> store.commit({"segment:vip": {u: msgspec.msgpack.encode(0.0) for u in ("c", "a", "b")}}, {})
>>> [m["user_id"] for m in segment_members(store, "vip", limit=2)["members"]]
['a', 'b']
>>> segment_members(store, "vip", after="b")["members"]
[{'user_id': 'c', 'entered_at': 0.0}]
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
from fastapi import FastAPI, Query
from fastapi.responses import Response, StreamingResponse

from liveprofile.errors import SegmentNotFound
from liveprofile.profile.state import ProfileUpdater, decode_profile, lifecycle
from liveprofile.serving.limits import JSONResponse
from liveprofile.store.base import Store
from liveprofile.store.layout import (
    CHECKPOINT,
    PROFILES,
    SEGMENT_HISTORY,
    decode_checkpoint,
    segment_namespace,
    stored_config,
)

MAX_PAGE = 10_000
CSV_COLUMNS = (
    "user_id",
    "entered_at",
    "last_seen",
    "lifecycle",
    "frequency",
    "monetary",
    "monetary_90d",
    "top_interest",
)


def segment_rules(store: Store) -> dict[str, str]:
    """The segments declared in the store's pipeline config: name -> rule."""
    return dict(stored_config(store).segments)


def _check(store: Store, name: str) -> None:
    rules = segment_rules(store)
    if name not in rules:
        known = ", ".join(sorted(rules)) or "none"
        raise SegmentNotFound(f"no segment {name!r}; this store declares: {known}")


def segment_sizes(store: Store) -> dict[str, Any]:
    """Each declared segment's rule and current member count, and the size history."""
    rules = segment_rules(store)
    blob = store.get_meta(SEGMENT_HISTORY)
    history = [] if blob is None else msgspec.msgpack.decode(blob)
    return {
        "segments": {
            name: {"rule": rule, "members": store.count(segment_namespace(name))}
            for name, rule in sorted(rules.items())
        },
        "history": [{"watermark": wm, "sizes": sizes} for wm, sizes in history],
    }


def segment_members(
    store: Store, name: str, *, after: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """One page of a segment's members in user-id order, from the user after ``after``;
    ``next`` is the cursor of the following page (None on the last page)."""
    _check(store, name)
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be within 1..{MAX_PAGE}, got {limit}")
    rows = list(store.scan(segment_namespace(name), after=after, limit=limit + 1))
    page = rows[:limit]
    members = [{"user_id": user, "entered_at": msgspec.msgpack.decode(v)} for user, v in page]
    more = len(rows) > limit
    return {"segment": name, "members": members, "next": page[-1][0] if more else None}


def iter_member_rows(store: Store, name: str, page: int = 500) -> Iterator[dict[str, Any]]:
    """Every member of a segment with the profile fields a campaign needs (see
    ``CSV_COLUMNS``), read a page at a time."""
    _check(store, name)
    config = stored_config(store)
    updater = ProfileUpdater(config.profile, config.risk)
    blob = store.get_meta(CHECKPOINT)
    watermark = 0.0 if blob is None else decode_checkpoint(blob).watermark
    after: str | None = None
    while True:
        rows = list(store.scan(segment_namespace(name), after=after, limit=page))
        if not rows:
            return
        users = [user for user, _ in rows]
        for (user, entered), p_blob in zip(rows, store.read(PROFILES, users), strict=True):
            if p_blob is None:
                continue  # deleted between the two reads
            p = decode_profile(p_blob, user)
            at = max(watermark, p.last_ts)
            interests = updater.interests_at(p, at)
            yield {
                "user_id": user,
                "entered_at": msgspec.msgpack.decode(entered),
                "last_seen": p.last_ts,
                "lifecycle": lifecycle(p, at),
                "frequency": p.purchases,
                "monetary": round(p.monetary, 2),
                "monetary_90d": round(p.spent_within(90, at), 2),
                "top_interest": next(iter(interests), ""),
            }
        after = users[-1]


def iter_members_csv(store: Store, name: str) -> Iterator[str]:
    """A segment's members as CSV text, header first, a chunk per page (for streaming)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for n, row in enumerate(iter_member_rows(store, name), start=1):
        writer.writerow(row)
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def add_segment_routes(app: FastAPI, store: Callable[[], Store], auth: list[Any]) -> None:
    """Mount the segment endpoints on a read app whose open store ``store()`` returns."""

    @app.get("/v1/segments", dependencies=auth)
    async def segments() -> Response:
        """Every declared segment with its rule and member count, and the size history."""
        return JSONResponse(segment_sizes(store()))

    @app.get("/v1/segments/{name}/members", dependencies=auth)
    async def members(
        name: str, after: str | None = None, limit: int = Query(100, ge=1, le=MAX_PAGE)
    ) -> Response:
        """One page of members in user-id order; pass ``next`` back as ``after``."""
        return JSONResponse(segment_members(store(), name, after=after, limit=limit))

    @app.get("/v1/segments/{name}/members.csv", dependencies=auth)
    async def members_csv(name: str) -> Response:
        """Every member as CSV (streamed), with the profile fields a campaign needs."""
        _check(store(), name)

        async def body() -> AsyncIterator[str]:
            # on the event loop thread, which owns the store's connection (SQLite)
            for chunk in iter_members_csv(store(), name):
                yield chunk

        return StreamingResponse(
            body(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )

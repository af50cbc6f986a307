"""The read API: profiles and online scores over HTTP, straight from a store (read-only).

Every endpoint but ``/healthz`` needs ``Authorization: Bearer <read_token>``. Store access runs
on the event loop thread (SQLite connections belong to the thread that opened them).

>>> app = create_read_app(ReadSettings(store="memory://", read_token="s3cret"))
>>> sorted({r.path for r in app.routes if r.path.startswith("/v1/profiles")})
['/v1/profiles/{user}', '/v1/profiles/{user}/export', '/v1/profiles:batch']
>>> ReadSettings(store="memory://", read_token="")
Traceback (most recent call last):
...
liveprofile.errors.ConfigError: the read API needs a non-empty read token (--read-token or \
LIVEPROFILE_READ_TOKEN)
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.routing import Route

from liveprofile.config import PipelineConfig
from liveprofile.engine.core import Core
from liveprofile.errors import ConfigError, LiveprofileError, ProfileNotFound, StoreError
from liveprofile.learn.base import Learner, run_ops
from liveprofile.learn.stored import StoredModels
from liveprofile.profile.items import decode_item
from liveprofile.profile.population import Population, standing
from liveprofile.profile.state import decode_profile
from liveprofile.serving import MAX_CANDIDATES
from liveprofile.serving.collector import HTTPProblem, check_token, error_response
from liveprofile.serving.dashboard import mount_dashboard
from liveprofile.serving.limits import NOT_FOUND, PROBLEMS, JSONResponse
from liveprofile.serving.metrics import StoreStats, mount_metrics
from liveprofile.serving.partitions import PartitionedView
from liveprofile.serving.privacy import add_privacy_routes
from liveprofile.serving.recommend import Recommender, exposures, find_task, scoring_time
from liveprofile.serving.scoring import (
    contributions,
    feature_weights,
    scoring_profile,
    top_positions,
)
from liveprofile.serving.segments import add_segment_routes
from liveprofile.store import Store, open_store
from liveprofile.store.layout import (
    CHECKPOINT,
    ITEMS,
    POPULATION,
    PROFILES,
    Checkpoint,
    decode_checkpoint,
    stored_config,
)

MAX_BATCH = 1000


@dataclass(frozen=True)
class ReadSettings:
    """What the read API needs. ``read_token`` has no default: the caller must give one.

    ``as_of`` is the time profiles are viewed at: ``"watermark"`` (the store's latest event
    time, as ``liveprofile.read_profile`` does), ``"now"`` (wall clock) or fixed epoch seconds.
    """

    store: str
    read_token: str
    as_of: Literal["watermark", "now"] | float = "watermark"
    #: token of the write endpoints (privacy erasure); None: they answer 403
    write_token: str | None = None
    #: partitions of a Redis deployment's event streams (None: count the streams)
    partitions: int | None = None
    public_metrics: bool = False  # serve GET /metrics without the read token

    def __post_init__(self) -> None:
        if not self.read_token:
            raise ConfigError(
                "the read API needs a non-empty read token (--read-token or LIVEPROFILE_READ_TOKEN)"
            )
        if self.write_token is not None and self.write_token == self.read_token:
            raise ConfigError("the write token must differ from the read token")
        if isinstance(self.as_of, str) and self.as_of not in ("watermark", "now"):
            raise ConfigError(f"as_of must be 'watermark', 'now' or epoch seconds: {self.as_of!r}")


class BatchRequest(BaseModel):
    """Users to read in one store round trip."""

    users: list[str] = Field(max_length=MAX_BATCH)


class RecommendRequest(BaseModel):
    """Candidates to rank for a user (all of the store's popular ones when left out)."""

    candidates: list[str] | None = Field(None, max_length=MAX_CANDIDATES)
    k: int = Field(10, ge=1, le=MAX_CANDIDATES)
    task: str | None = None
    rank: str = "learned"


class _Reader:
    """The open store, its config and the learners, reloaded when the checkpoint moves on."""

    def __init__(self, settings: ReadSettings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self._config: PipelineConfig | None = None
        self._core: Core | None = None
        self._models: StoredModels | None = None
        self._recommender: Recommender | None = None
        self._standing: tuple[bytes | None, float, Population | None] = (b"", -math.inf, None)
        self._checkpoint: tuple[bytes | None, Checkpoint] = (None, Checkpoint())

    def open(self) -> None:
        self._store = PartitionedView(open_store(self.settings.store, read_only=True))
        self._store.setup()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise StoreError("the store is not open")
        return self._store

    @property
    def core(self) -> Core:
        if self._core is None:
            self._config = stored_config(self.store)
            self._core = Core(self._config)
        return self._core

    def checkpoint(self) -> Checkpoint:
        """The committed checkpoint, decoded again only when its bytes change."""
        blob = self.store.get_meta(CHECKPOINT)
        if blob is None or blob != self._checkpoint[0]:
            self._checkpoint = (blob, decode_checkpoint(blob))
        return self._checkpoint[1]

    def as_of(self, last_ts: float, watermark: float) -> float:
        policy = self.settings.as_of
        if policy == "now":
            return time.time()
        if policy == "watermark":
            return max(last_ts, watermark)
        return float(policy)

    def views(self, users: list[str]) -> dict[str, dict[str, Any]]:
        """The profile views of the users that have one, from one store read."""
        blobs = self.store.read(PROFILES, users)
        watermark, population = self.population()
        out: dict[str, dict[str, Any]] = {}
        for user, blob in zip(users, blobs, strict=True):
            if blob is None:
                continue
            p = decode_profile(blob, user)
            rfm = None if population is None else population.scores(standing(p))
            out[user] = self.core.updater.view(p, at=self.as_of(p.last_ts, watermark), rfm=rfm)
        return out

    def population(self) -> tuple[float, Population | None]:
        """The watermark and the population histograms, decoded again only when the committed
        checkpoint changes (a single-profile read would otherwise spend most of its time here)."""
        blob = self.store.get_meta(CHECKPOINT)
        if blob != self._standing[0]:
            ckpt = decode_checkpoint(blob)
            pop = self.store.get_meta(POPULATION)
            population = None if pop is None else msgspec.msgpack.decode(pop, type=Population)
            self._standing = (blob, ckpt.watermark, population)
        return self._standing[1], self._standing[2]

    def learner(self, task: str, seq: int) -> Learner:
        if self._models is None:
            self._models = StoredModels(self.store)
        learner = self._models.get(task, seq)
        if learner is None:
            raise HTTPProblem(404, f"no model for task {task!r} in the store yet")
        return learner

    @property
    def recommender(self) -> Recommender:
        if self._recommender is None:
            self._recommender = Recommender(self.store, self.core, self.learner)
        return self._recommender

    def score(self, user: str, item: str, task_name: str, top: int) -> dict[str, Any]:
        core = self.core
        task = find_task(core.config, task_name)
        (p_blob,) = self.store.read(PROFILES, [user])
        if p_blob is None:
            raise ProfileNotFound(f"no profile for user {user!r}")
        p = scoring_profile(p_blob, user)
        (i_blob,) = self.store.read(ITEMS, [item])
        it = None if i_blob is None else decode_item(i_blob, item)
        ckpt = self.checkpoint()
        built = exposures(
            self.recommender.features, task, user, p, [item], [it], scoring_time(ckpt, p)
        )
        idx, val = built.example(0)
        learner = self.learner(task.name, ckpt.seq)
        if task.regression:  # the expected value (e.g. spend), not a probability
            score = float(learner.predict_one(built.merged(0)))  # type: ignore[attr-defined]
        else:  # P(y=1) as a recommendation computes it (one operation of the batched path)
            score = float(run_ops(learner, built.predict_ops())[0])
        weights = feature_weights(learner, idx)
        at = top_positions(val, weights, top)  # only the top features are named
        names = dict(zip(at, built.names(0, [idx[k] for k in at]), strict=True))
        return {
            "user": user,
            "item": item,
            "task": task.name,
            "score": score,
            "top_features": contributions(names, val, weights, at),
        }


def create_read_app(settings: ReadSettings) -> FastAPI:
    """The read API app; the store is opened on startup and closed on shutdown."""
    reader = _Reader(settings)
    token = settings.read_token.encode("utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reader.open()
        try:
            yield
        finally:
            reader.close()

    app = FastAPI(
        title="liveprofile read API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        responses=PROBLEMS,
    )
    app.add_exception_handler(LiveprofileError, error_response)

    async def authorized(request: Request) -> None:
        check_token(request, token)

    auth = [Depends(authorized)]
    stats = StoreStats(lambda: reader.store)
    mount_dashboard(app, stats, auth)
    mount_metrics(app, stats, [] if settings.public_metrics else auth)

    def profile_response(user: str) -> Response:
        views = reader.views([user])
        if user not in views:
            raise ProfileNotFound(f"no profile for user {user!r}")
        return Response(msgspec.json.encode(views[user]), media_type="application/json")

    async def profile_fast(request: Request) -> Response:
        request.scope["route"] = fast_route  # as FastAPI does, for the request metrics
        check_token(request, token)
        return profile_response(request.path_params["user"])

    # The hottest read skips FastAPI's parameter and dependency resolution (about a third of
    # its cost); the FastAPI route below documents it in the OpenAPI spec and answers the same.
    fast_route = Route("/v1/profiles/{user}", profile_fast, methods=["GET"])
    app.router.routes.append(fast_route)

    @app.get("/v1/profiles/{user}", dependencies=auth, responses={404: NOT_FOUND})
    async def profile(user: str) -> Response:
        """One user's profile view (as ``liveprofile.read_profile``); 404 if there is none."""
        return profile_response(user)

    @app.post("/v1/profiles:batch", dependencies=auth)
    async def profiles(body: BatchRequest) -> Response:
        """Profile views of up to 1000 users in one store read; unknown users under missing."""
        users = list(dict.fromkeys(body.users))
        views = reader.views(users)
        missing = [u for u in users if u not in views]
        return JSONResponse({"profiles": views, "missing": missing})

    @app.get("/v1/score", dependencies=auth, responses={404: NOT_FOUND})
    async def score(user: str, item: str, task: str, top: int = 10) -> Response:
        """The task's online model P(y=1) for (user, item) now, with its top features."""
        return JSONResponse(reader.score(user, item, task, max(0, top)))

    add_segment_routes(app, lambda: reader.store, auth)
    add_privacy_routes(app, settings, auth)

    @app.get("/v1/recommendations/{user}", dependencies=auth, responses={404: NOT_FOUND})
    async def recommendations(
        user: str,
        k: int = Query(10, ge=1, le=MAX_CANDIDATES),
        task: str | None = None,
        rank: str = "learned",
    ) -> Response:
        """Top k of the user's recent items and the popular items of their top interests and
        overall, by the learned ranking (``rank=blend``: the fixed blend of P(y=1), popularity,
        interest and history; ``rank=model``: P(y=1) alone)."""
        return JSONResponse(reader.recommender.recommend(user, k, task=task, rank=rank))

    @app.post("/v1/recommendations/{user}", dependencies=auth, responses={404: NOT_FOUND})
    async def recommend_among(user: str, body: RecommendRequest) -> Response:
        """Top k of the given candidates (all popular ones of the user's interests if none)."""
        out = reader.recommender.recommend(user, body.k, body.candidates, body.task, rank=body.rank)
        return JSONResponse(out)

    @app.get("/healthz")
    async def healthz() -> Response:
        """200 when the store answers, 503 otherwise."""
        try:
            seq = reader.checkpoint().seq
        except LiveprofileError as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, 503)
        return JSONResponse({"status": "ok", "seq": seq})

    return app

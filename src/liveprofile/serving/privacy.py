"""Privacy endpoints of the read API: export a user's data (read token), erase a user (write
token). Erasure on an embedded store is applied before the answer (200); on Redis it is queued
to the user's partition stream for the worker (202)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from liveprofile.privacy import erase, export_user
from liveprofile.serving.collector import HTTPProblem, check_token
from liveprofile.serving.limits import NOT_FOUND, JSONResponse, problem

if TYPE_CHECKING:
    from liveprofile.serving.profiles import ReadSettings


ERASE: dict[int | str, dict[str, Any]] = {
    202: {"description": "Erasure queued for the worker (Redis store)"},
    403: problem("Erasure is disabled: the service has no write token"),
    409: problem("Another process is writing the store; try again when it is done"),
}


def add_privacy_routes(app: FastAPI, settings: ReadSettings, auth: list[Any]) -> None:
    """Mount ``GET /v1/profiles/{user}/export`` and ``DELETE /v1/profiles/{user}``."""
    write_token = None if settings.write_token is None else settings.write_token.encode()

    async def may_write(request: Request) -> None:
        if write_token is None:
            raise HTTPProblem(403, "erasure is disabled: start the service with --write-token")
        check_token(request, write_token)

    @app.get("/v1/profiles/{user}/export", dependencies=auth, responses={404: NOT_FOUND})
    async def export(user: str) -> Response:
        """Everything stored about the user (profile, segments, links, changes); 404 if none."""
        return JSONResponse(export_user(settings.store, user))

    @app.delete("/v1/profiles/{user}", dependencies=[Depends(may_write)], responses=ERASE)
    async def delete(user: str) -> Response:
        """Erase the user: profile, segment memberships, identity links, queued changes."""
        done = erase(settings.store, [user], partitions=settings.partitions)
        return JSONResponse(done, status_code=202 if done["status"] == "queued" else 200)

"""The HTTP event collector: ``POST /v1/events`` in, Redis streams or an embedded store out.

The body is one JSON event or a JSON array of them. Every event is validated on arrival; the
valid ones go to the sink, the invalid ones are reported back (index and reason, so the caller can
fix and resend) and recorded in the dead-letter sink, so nothing is lost silently.

>>> from liveprofile.redis.sink import RedisSinkSettings
>>> settings = CollectorSettings(token="s3cret", sink=RedisSinkSettings(prefix="shop"))
>>> app = create_app(settings)
>>> sorted(r.path for r in app.routes if r.path.startswith(("/v1", "/healthz")))
['/healthz', '/v1/events']
>>> CollectorSettings(token="", sink=RedisSinkSettings())
Traceback (most recent call last):
...
liveprofile.errors.ConfigError: the collector needs a non-empty token (--token or LIVEPROFILE_TOKEN)
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import Response

from liveprofile.errors import ConfigError, InvalidEvent, LiveprofileError
from liveprofile.events.schema import COMMANDS, EventParser, check_depth
from liveprofile.kafka.sink import KafkaSink, KafkaSinkSettings
from liveprofile.redis.sink import RedisSink, RedisSinkSettings
from liveprofile.serving.limits import PROBLEMS, JSONResponse
from liveprofile.serving.sinks import Accepted, EmbeddedSink, EmbeddedSinkSettings, Rejected, Sink

MiB = 1024 * 1024


@dataclass(frozen=True)
class CollectorSettings:
    """Everything the collector needs. ``token`` has no default: the caller must give one."""

    token: str
    sink: RedisSinkSettings | EmbeddedSinkSettings | KafkaSinkSettings
    max_body_bytes: int = MiB
    max_batch: int = 1000

    def __post_init__(self) -> None:
        if not self.token:
            raise ConfigError(
                "the collector needs a non-empty token (--token or LIVEPROFILE_TOKEN)"
            )
        if self.max_body_bytes < 1 or self.max_batch < 1:
            raise ConfigError("max_body_bytes and max_batch must be >= 1")


class HTTPProblem(LiveprofileError):
    """A request the collector refuses, with its status and a message for the caller."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.headers = headers


def error_response(request: Request, exc: Exception) -> Response:
    """Every liveprofile error as ``{"error": message}`` with the status it knows."""
    assert isinstance(exc, LiveprofileError)
    headers = exc.headers if isinstance(exc, HTTPProblem) else None
    return JSONResponse({"error": str(exc)}, status_code=exc.http_status, headers=headers)


def make_sink(settings: RedisSinkSettings | EmbeddedSinkSettings | KafkaSinkSettings) -> Sink:
    """The sink for its settings."""
    if isinstance(settings, KafkaSinkSettings):
        return KafkaSink(settings)
    if isinstance(settings, RedisSinkSettings):
        return RedisSink(settings)
    return EmbeddedSink(settings)


def check_token(request: Request, token: bytes) -> None:
    """Refuse (401) a request without ``Authorization: Bearer <token>``; constant-time compare."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPProblem(
            401,
            "missing bearer token: send 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode("utf-8"), token):
        raise HTTPProblem(
            401, "invalid bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) a declared or actual size above ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPProblem(400, f"invalid Content-Length {declared!r}") from None
        if size > limit:
            raise HTTPProblem(413, f"body is {size} bytes, more than the limit of {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise HTTPProblem(413, f"body is more than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _split(body: bytes, max_batch: int) -> list[bytes]:
    """The raw JSON of each event in the body: one object, or an array of them."""
    text = body.lstrip()
    if not text:
        raise HTTPProblem(400, "empty body: send a JSON event object or an array of them")
    try:
        if text[:1] == b"[":
            try:
                items = [bytes(raw) for raw in msgspec.json.decode(text, type=list[msgspec.Raw])]
            except RecursionError:
                # nesting deep enough to exhaust the decoder: split without recursing; each
                # event is then judged alone (the parser refuses the deep one)
                items = _split_array(text)
        else:
            check_depth(text)
            items = [bytes(msgspec.json.decode(text, type=msgspec.Raw)).strip()]
    except msgspec.DecodeError as exc:
        raise HTTPProblem(400, f"body is not valid JSON: {exc}") from None
    except InvalidEvent as exc:
        raise HTTPProblem(400, f"body is not acceptable JSON: {exc}") from None
    if len(items) > max_batch:
        raise HTTPProblem(413, f"batch has {len(items)} events, more than the limit of {max_batch}")
    return items


def _split_array(text: bytes) -> list[bytes]:
    """The raw elements of a JSON array, found by scanning brackets outside strings (no
    recursion, whatever the depth); each element is validated on its own afterwards.

    >>> _split_array(b'[{"a": [[1]]}, 2, "x,]"]')
    [b'{"a": [[1]]}', b'2', b'"x,]"']
    """
    items: list[bytes] = []
    depth = 0
    start = 1
    in_string = escaped = False
    for k, byte in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
        elif byte in (0x5D, 0x7D):
            depth -= 1
            if depth == 0:
                if text[k + 1 :].strip():
                    raise msgspec.DecodeError("trailing characters after the array")
                last = text[start:k].strip()
                if last or items:
                    items.append(last)
                return items
        elif byte == 0x2C and depth == 1:
            items.append(text[start:k].strip())
            start = k + 1
    raise msgspec.DecodeError("the array is not closed")


_EVENT = {
    "type": "object",
    "properties": {
        "event_id": {"type": ["string", "integer"]},
        "user_id": {"type": ["string", "integer"]},
        "anonymous_id": {"type": ["string", "integer"]},
        "type": {"type": "string"},
        "ts": {"type": ["number", "string"]},
        "item_id": {"type": ["string", "integer"]},
        "category": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "value": {"type": "number"},
        "props": {"type": "object"},
    },
    "required": ["event_id", "type", "ts"],
}
#: the request body of POST /v1/events, for the OpenAPI document
EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [_EVENT, {"type": "array", "items": _EVENT}]},
            }
        },
    }
}
_ANSWER = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {
                "accepted": {"type": "integer"},
                "rejected": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"index": {"type": "integer"}, "reason": {"type": "string"}},
                    },
                },
            },
        }
    }
}
EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Valid events appended to the streams", "content": _ANSWER},
    202: {"description": "Valid events queued for the embedded store", "content": _ANSWER},
}


def create_app(settings: CollectorSettings) -> FastAPI:
    """The collector app; the sink is opened on startup and closed (drained) on shutdown."""
    sink = make_sink(settings.sink)
    token = settings.token.encode("utf-8")
    parser = EventParser(commands=True)  # to answer commands with the collector's own reason

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await sink.start()
        try:
            yield
        finally:
            await sink.stop()

    app = FastAPI(
        title="liveprofile collector",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        responses=PROBLEMS,
    )
    app.add_exception_handler(LiveprofileError, error_response)

    @app.post("/v1/events", openapi_extra=EVENTS_BODY, responses=EVENTS_RESPONSES)
    async def collect(request: Request) -> Response:
        """Validate events and hand the valid ones to the sink."""
        check_token(request, token)
        body = await _read_body(request, settings.max_body_bytes)
        accepted: list[Accepted] = []
        rejected: list[Rejected] = []
        report: list[dict[str, object]] = []
        for index, raw in enumerate(_split(body, settings.max_batch)):
            try:
                event = parser.parse_json(raw)
                if event.type in COMMANDS:
                    raise InvalidEvent(
                        f"{event.type!r}: commands are not accepted from the collector; "
                        "erasure is not accepted from the collector either: use DELETE "
                        "/v1/profiles/{user} of the read API (write token) or "
                        "'liveprofile privacy delete'"
                    )
                accepted.append(Accepted(event, raw))
            except InvalidEvent as exc:
                rejected.append(Rejected(raw.decode("utf-8", "replace"), str(exc)))
                report.append({"index": index, "reason": str(exc)})
        await sink.submit(accepted, rejected)
        return JSONResponse({"accepted": len(accepted), "rejected": report}, sink.status)

    @app.get("/healthz")
    async def healthz() -> Response:
        """200 when the sink is reachable, 503 otherwise."""
        problem = await sink.check()
        if problem is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "error": problem}, 503)

    return app

"""Limits every HTTP server of liveprofile applies: request size and time to send the headers.

- :class:`BodyLimit` answers 413 to a request whose declared ``Content-Length`` or actual body is
  larger than its limit, before the route reads it (a chunked body is counted as it arrives);
- :class:`HeaderTimeoutProtocol` closes a connection that has not sent a complete request head
  within ``header_timeout`` seconds of connecting, or of its previous response (a client that
  connects and sends nothing, or trickles header bytes, no longer holds a connection for ever);
- :func:`run_server` runs an app under uvicorn with both.

>>> import asyncio
>>> async def app(scope, receive, send):
...     await receive()
...     await send({"type": "http.response.start", "status": 200, "headers": []})
...     await send({"type": "http.response.body", "body": b"ok"})
>>> limited = BodyLimit(app, max_bytes=4)
>>> sent = []
>>> async def receive():
...     return {"type": "http.request", "body": b"12345", "more_body": False}
>>> async def send(message):
...     sent.append(message)
>>> asyncio.run(limited({"type": "http", "headers": []}, receive, send))
>>> sent[0]["status"], sent[1]["body"]
(413, b'{"error":"body is more than the limit of 4 bytes"}')
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec
from starlette.responses import JSONResponse as _StarletteJSON
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Scope = dict[str, Any]
Message = dict[str, Any]

#: the default largest body of the read API (a batch of 1,000 ids is well under it)
MAX_BODY = 1024 * 1024
#: the default time a client has to send a request's head
HEADER_TIMEOUT = 10.0


class JSONResponse(_StarletteJSON):
    """A JSON response in which a non-finite number is written as null (valid JSON, unlike
    Python's ``json`` module's ``Infinity``), encoded by msgspec."""

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def problem(description: str) -> dict[str, Any]:
    """An OpenAPI response whose body is ``{"error": message}``."""
    schema = {
        "type": "object",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
    }
    return {"description": description, "content": {"application/json": {"schema": schema}}}


#: answers every route of liveprofile's servers may give, for their OpenAPI documents
PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: problem("A request the caller can fix; the error says how"),
    401: problem("Missing or invalid bearer token"),
    404: problem("No such user, item, segment, task or model (or no such path)"),
    413: problem("Body larger than the server's limit"),
    503: problem("The store or sink cannot be reached, or a stored row is damaged"),
}


#: the answer of a route that reads one user, item or task
NOT_FOUND = problem("No such user, item, task or model")


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _answer(send, 400, f"invalid Content-Length {value.decode()!r}")
                    return
                if declared > limit:
                    await _answer(
                        send, 413, f"body is {declared} bytes, more than the limit of {limit}"
                    )
                    return
        # read the body first (at most ``limit`` bytes are held), then hand it to the app: an
        # error raised inside the app's own body reading would be answered 400 by FastAPI
        parts: list[bytes] = []
        seen = 0
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await _answer(send, 413, f"body is more than the limit of {limit} bytes")
                return
            parts.append(body)
            if not message.get("more_body", False):
                break
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self.app(scope, replay, send)


async def _answer(send: Any, status: int, error: str) -> None:
    body = b'{"error":"' + error.replace('"', "'").encode() + b'"}'
    headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections slow to send a request head."""

    header_timeout = HEADER_TIMEOUT
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expire(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def run_server(
    app: Any,
    host: str,
    port: int,
    *,
    max_body_bytes: int = MAX_BODY,
    header_timeout: float = HEADER_TIMEOUT,
) -> None:
    """Serve ``app`` with uvicorn, with the body limit and the header timeout (the environment
    variable ``LIVEPROFILE_HEADER_TIMEOUT``, in seconds, overrides the latter)."""
    import uvicorn

    header_timeout = float(os.environ.get("LIVEPROFILE_HEADER_TIMEOUT", header_timeout))

    protocol = type("Protocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
    uvicorn.run(
        BodyLimit(app, max_body_bytes),
        host=host,
        port=port,
        http=protocol,
        access_log=False,
        log_level="info",
        # uvicorn's own keep-alive timeout closes idle connections between requests
        timeout_keep_alive=5,
    )

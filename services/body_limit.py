"""A ceiling on HTTP request bodies (``CHARGEOPS_HTTP_MAX_BODY_BYTES``).

Decision: a pure ASGI middleware rather than Starlette's ``RequestBodyLimitMiddleware``
(which FastAPI's ``max_body_size`` uses): that one answers ``text/plain``, and every error of
this API is an RFC 9457 problem. A body announced larger than the limit is refused before a
byte of it is read; one without a Content-Length (chunked) is counted as it streams in and
refused as soon as it passes the limit, never buffered whole.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.problems import problem_response


class _TooLarge(HTTPException):
    """Raised by the counting ``receive``; an HTTPException so that FastAPI, reading a body,
    passes it on (it turns other errors there into a 400) to the problem handler."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, _detail(max_bytes))


def _detail(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes (CHARGEOPS_HTTP_MAX_BODY_BYTES)"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            Request(scope, receive),
            413,
            "Content too large",
            _detail(self.max_bytes),
        )
        await response(scope, receive, send)

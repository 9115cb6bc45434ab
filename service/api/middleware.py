"""Pure ASGI middleware: request ids, per-request metrics and logging, and the body size limit.

Pure ASGI (not BaseHTTPMiddleware) so the body limit sees the bytes as they stream in:
a chunked body has no Content-Length to check up front.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response, internal_error_response
from service.api.metrics import ServiceMetrics

log = logging.getLogger("mcdrop.api")

# Accept a caller's id only when it is short and plain, so it cannot forge log lines.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Request ids must be unique, not unguessable: a random per-process prefix and a counter give
# 32 hex digits like uuid4().hex without an os.urandom call (a system call) per request.
_ID_PREFIX = secrets.token_hex(10)
_id_counter = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter) % 16**12:012x}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class RequestContextMiddleware:
    """Gives every request an id (echoed as X-Request-ID), times it, and turns an unexpected
    exception into a 500 without internals, logged with that id."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID_RE.fullmatch(given) else new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = False
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s: unhandled error", request_id)
            if started:
                raise  # the reply is half sent; let the server close the connection
            status = 500
            await internal_error_response(request_id)(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            model = str(state.get("model", ""))
            elapsed = time.perf_counter() - t0
            self.metrics.observe_request(path, model, status, elapsed)
            log.debug(
                "request %s %s %s -> %d in %.1f ms",
                request_id,
                scope.get("method"),
                path,
                status,
                1000 * elapsed,
            )


class _BodyTooLarge(Exception):
    """Raised inside receive() when the streamed body passes the limit."""


class BodyLimitMiddleware:
    """Answers 413 to bodies over `max_bytes`, counting bytes as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(scope.get("state", {}).get("request_id", ""))
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send, request_id)
            return

        received = 0
        exceeded = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded:
                return  # the app's reaction to the aborted read (often a 400) is replaced
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # The app may re-raise our signal as its own error type: what counts is the flag.
            if not exceeded:
                raise
        if exceeded and not response_started:
            await self._reject(scope, receive, send, request_id)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        response = error_response(
            413, f"request body is over the limit of {self.max_bytes} bytes", (), request_id
        )
        await response(scope, receive, send)

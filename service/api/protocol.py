"""uvicorn's HTTP/1.1 protocol with read deadlines, and health probes the connection cap never
refuses.

uvicorn waits for a request head or body for as long as the client keeps the socket open, and
its connection cap (MCDROP_MAX_CONNECTIONS) counts those idle sockets, answering 503 to
everything past it, liveness included. So a few hundred clients that send half a request and
stop (slowloris) make a healthy server look dead to its orchestrator. This protocol:

- gives each request head MCDROP_HEADER_READ_TIMEOUT_S from its first byte (or from the
  connection's opening) to arrive whole, else answers 408 and closes the connection;
- gives each request body MCDROP_BODY_READ_TIMEOUT_S from the end of its head, a deadline on the
  whole body and not between reads, so a body trickled a byte at a time cannot hold the
  connection open longer; past it the connection is closed (the app sees a disconnect);
- counts against the cap only the requests the app is working on: a connection still sending
  its head or body is bounded by the deadlines above instead, so it cannot crowd out real work;
- lets GET requests for the health probes through whatever the cap says: they are cheap, and
  an orchestrator must see the truth when ordinary traffic is refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROBE_PATHS = frozenset(
    {b"/health/live", b"/health/ready", b"/v2/health/live", b"/v2/health/ready"}
)

_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 29\r\nconnection: close\r\n\r\nrequest not received in time\n"
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with head and body read deadlines and probes that bypass the cap.

    The deadlines come from the uvicorn Config (see `guarded_config`); None disables one.
    """

    header_timeout_s: float | None = 10.0
    body_timeout_s: float | None = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._reading_body = False

    # ------------------------------------------------------------------ deadlines

    def _arm(self, seconds: float | None, body: bool) -> None:
        self._disarm()
        if seconds is not None:
            self._reading_body = body
            self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        idle = self.cycle is None or self.cycle.response_complete
        if not self._reading_body and idle:
            # This request has not reached the app: answer it plainly, as a server should.
            self.transport.write(_TIMEOUT_408)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, body=False)  # a connection that sends nothing at all

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uploading().discard(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # the next request on a kept-alive connection
            self._arm(self.header_timeout_s, body=False)

    def _uploading(self) -> set[GuardedHttpProtocol]:
        """This server's connections whose app task still waits for the request body."""
        state = self.server_state
        if not hasattr(state, "mcdrop_uploading"):
            state.mcdrop_uploading = set()  # type: ignore[attr-defined]
        return state.mcdrop_uploading  # type: ignore[attr-defined, no-any-return]

    def on_headers_complete(self) -> None:
        limit = self.limit_concurrency
        probe = self.parser.get_method() == b"GET" and self.url.split(b"?", 1)[0] in PROBE_PATHS
        working = len(self.tasks) - len(self._uploading())
        if probe or limit is None or working < limit:
            # uvicorn's own check would also count idle and half-sent connections: skip it.
            self.limit_concurrency = None
        try:
            super().on_headers_complete()
        finally:
            self.limit_concurrency = limit
        # Whether a body follows is the parser's business (Content-Length or chunked); if none
        # does, on_message_complete comes straight after and disarms this.
        self._uploading().add(self)
        self._arm(self.body_timeout_s, body=True)

    def on_message_complete(self) -> None:
        self._disarm()
        self._uploading().discard(self)
        super().on_message_complete()


def guarded_protocol(
    header_timeout_s: float | None, body_timeout_s: float | None
) -> type[GuardedHttpProtocol]:
    """The protocol class to pass to uvicorn.Config(http=...) with these deadlines."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )

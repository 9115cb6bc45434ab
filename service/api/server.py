"""uvicorn's server with a draining step on SIGTERM/SIGINT (graceful shutdown).

uvicorn already stops accepting connections on SIGTERM and waits up to
timeout_graceful_shutdown (MCDROP_SHUTDOWN_GRACE_S) for the requests in flight, then runs the
lifespan's shutdown. Before that, `on_exit` flips the app to draining: readiness answers 503
and a prediction arriving on a still-open keep-alive connection gets 503 with Retry-After,
while admitted and queued predictions run to completion.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType

import uvicorn


class DrainingServer(uvicorn.Server):
    """A uvicorn.Server that calls `on_exit` (from the signal handler) before shutting down."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()  # sets a flag only: safe inside a signal handler
        super().handle_exit(sig, frame)


__all__ = ["DrainingServer"]

"""Admission control: a bound on in-flight inference work, a bounded wait queue, and deadlines.

Work is measured in samples·rows (T·N), not requests: one request with T=10,000 costs as much
as a hundred with T=100, and T·N is what the engine's time and the samples' memory scale with.

- A request whose cost fits under `max_inflight` beside the work already admitted runs at once
  (unless others are already waiting: the queue is first in, first out, so a stream of small
  requests cannot starve a large one).
- Otherwise it waits in a queue of at most `max_queued` requests. When the queue is full it is
  refused at once with Overloaded (503) and a Retry-After header: a fast "no" beats a slow one.
- A request costlier than the whole bound is admitted alone (its cost is clamped to the bound);
  Settings refuses a bound below the per-request cap, so this only matters to direct callers.
- While draining (SIGTERM), every new request is refused with Overloaded; admitted and queued
  ones carry on, so the server can finish them within the shutdown grace period.
- `admitted(cost, timeout_s)` also enforces the request's deadline, queue wait included: past
  it the caller gets RequestTimeout (504) and the awaited work is cancelled. Work not yet
  started by a runner is dropped; a pass already running finishes and its result is discarded.

Health and /metrics never pass through here, so they are never refused.
Everything runs on the event loop: no locks, only futures.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from service.errors import Overloaded, RequestTimeout


@dataclass
class _Waiter:
    cost: int
    future: asyncio.Future[None]


class AdmissionController:
    """Bounds in-flight T·N work; queues up to `max_queued` requests; refuses the rest."""

    def __init__(
        self, max_inflight: int, max_queued: int, timeout_s: float, retry_after_s: float = 1.0
    ) -> None:
        if max_inflight < 1 or max_queued < 0 or timeout_s <= 0:
            raise ValueError("max_inflight must be >= 1, max_queued >= 0 and timeout_s > 0")
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.inflight = 0  # T·N of the admitted requests
        self.running = 0  # admitted requests
        self.draining = False
        self._queue: deque[_Waiter] = deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def drain(self) -> None:
        """Refuse new work from now on (called on SIGTERM); admitted and queued work goes on."""
        self.draining = True

    def deadline_for(self, timeout_ms: int | None) -> float:
        """The request's own timeout when it sets one, never beyond the server's."""
        if timeout_ms is None:
            return self.timeout_s
        return min(self.timeout_s, timeout_ms / 1000.0)

    @asynccontextmanager
    async def admitted(self, cost: int, timeout_s: float) -> AsyncIterator[None]:
        """Hold `cost` of the bound for the body; Overloaded or RequestTimeout otherwise."""
        cost = max(1, min(cost, self.max_inflight))
        try:
            async with asyncio.timeout(timeout_s):
                await self._acquire(cost)
                try:
                    yield
                finally:
                    self._release(cost)
        except TimeoutError:
            raise RequestTimeout(
                f"the request took longer than its deadline of {timeout_s:g} s; "
                "its work was cancelled (raise timeout_ms, or send fewer rows or samples)"
            ) from None

    async def _acquire(self, cost: int) -> None:
        if self.draining:
            raise self._refusal("the server is shutting down")
        if not self._queue and self.inflight + cost <= self.max_inflight:
            self._take(cost)
            return
        if len(self._queue) >= self.max_queued:
            raise self._refusal(
                f"the server is at capacity ({self.inflight} samples x rows in flight, "
                f"{len(self._queue)} requests waiting)"
            )
        waiter = _Waiter(cost, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        try:
            await waiter.future  # _wake takes the cost on our behalf before resolving it
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled():
                self._release(cost)  # admitted, then cancelled before we ran: give it back
            else:
                if waiter in self._queue:  # _wake may already have skipped it
                    self._queue.remove(waiter)
                self._wake()  # we may have been blocking smaller requests behind us
            raise

    def _take(self, cost: int) -> None:
        self.inflight += cost
        self.running += 1

    def _release(self, cost: int) -> None:
        self.inflight -= cost
        self.running -= 1
        self._wake()

    def _wake(self) -> None:
        """Admit waiters in order while the head fits."""
        while self._queue and self.inflight + self._queue[0].cost <= self.max_inflight:
            waiter = self._queue.popleft()
            if waiter.future.done():  # cancelled while queued
                continue
            self._take(waiter.cost)
            waiter.future.set_result(None)

    def _refusal(self, why: str) -> Overloaded:
        seconds = max(1, math.ceil(self.retry_after_s))
        return Overloaded(f"{why}; retry in {seconds} s", headers={"Retry-After": str(seconds)})


__all__ = ["AdmissionController"]

"""MCDROP_REFERRAL_WEBHOOK: one POST per new referral, from a background task.

The prediction path only puts the event on a bounded queue (never waits); a worker posts it
with a timeout and retries with exponential backoff. Notifications are best effort: when the
queue is full or every retry fails the event is counted and dropped. The referral itself is
safe in the store either way, so a receiver that missed events can catch up with
GET /v1/referrals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

from service.referrals.metrics import ReferralMetrics

log = logging.getLogger("mcdrop.referrals")


def event_for(row: dict[str, Any]) -> dict[str, Any]:
    """What the receiver gets: enough to route the item, not the (possibly large) input."""
    created = row["created_at"]
    return {
        "event": "referral.created",
        "referral_id": row["id"],
        "url": f"/v1/referrals/{row['id']}",
        "model": row["model"],
        "model_version": row["model_version"],
        "request_id": row["request_id"],
        "created_at": created.isoformat() if hasattr(created, "isoformat") else created,
        "uncertainty": row["uncertainty"],
        "threshold": row["threshold"],
        "metric": row["metric"],
    }


class WebhookSender:
    """A queue and one worker posting events to a URL."""

    def __init__(
        self,
        url: str,
        metrics: ReferralMetrics,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_queued: int = 1000,
    ) -> None:
        self.url = url
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(max_queued)
        self._task: asyncio.Task[None] | None = None

    def notify(self, rows: list[dict[str, Any]]) -> None:
        """Queue one event per row; never waits (full queue: the event is dropped, counted)."""
        for row in rows:
            try:
                self._queue.put_nowait(event_for(row))
            except asyncio.QueueFull:
                self.metrics.webhook.labels("dropped").inc()

    def notify_event(self, event: dict[str, Any]) -> None:
        """Queue an event built elsewhere (a calibration watch alarm); never waits."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.metrics.webhook.labels("dropped").inc()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="mcdrop-referral-webhook")

    async def stop(self, drain_s: float = 2.0) -> None:
        """Give queued events a moment to go out, then stop the worker."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_s)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while True:
                event = await self._queue.get()
                try:
                    await self._deliver(client, event)
                finally:
                    self._queue.task_done()

    async def _deliver(self, client: httpx.AsyncClient, event: dict[str, Any]) -> None:
        for attempt in range(self.retries + 1):
            try:
                r = await client.post(self.url, json=event)
                if r.status_code < 300:
                    self.metrics.webhook.labels("delivered").inc()
                    return
                reason = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                reason = type(e).__name__
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2**attempt)
        what = event.get("referral_id") or f"{event['event']} of {event.get('model')}"
        log.warning(
            "referral webhook: gave up on %s after %d tries (%s)", what, self.retries + 1, reason
        )
        self.metrics.webhook.labels("failed").inc()

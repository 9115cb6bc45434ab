"""The prediction path's side of the referral queue.

`record` gives every abstained row an id, then makes the rows durable before the prediction
answers, without ever failing it and without holding the event loop:

1. the rows join a queue; one writer task takes everything queued and inserts it in one
   transaction (group commit): every request that abstains while a commit is under way rides
   on the next one, so a commit, and its fsync, serves many requests. The commit runs on a
   thread of its own, awaited until the oldest row's MCDROP_REFERRAL_WRITE_TIMEOUT_MS is up;
2. when it times out or fails (or the store is known to be down) the whole group is appended to
   the local spool file with one fsync instead;
3. only when the spool fails too (the disk) is a row lost: it is counted in /metrics, logged,
   and its `referral_id` in the answer is null, so a client never holds an id that points
   nowhere.

A request's ids are returned only once its group is durable, in the store or in the spool.
A background task re-opens the store when it was down and replays the spool into it. A queued
row does not depend on its request: a client hanging up cannot pull it out of the group, and
`stop` drains the queue, so a graceful shutdown cannot strand rows between the two steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.referrals.database import redacted
from service.referrals.metrics import ReferralMetrics
from service.referrals.records import new_referral_id, referral_rows
from service.referrals.replay import open_warm, replay_spool
from service.referrals.spool import Spool
from service.referrals.store import ReferralStore
from service.referrals.webhook import WebhookSender
from service.serving.hooks import Rows
from service.serving.model import MCDropoutModel
from service.serving.results import Prediction

log = logging.getLogger("mcdrop.referrals")

_ROWS_BUILT_ON_LOOP = 16  # building more rows (hashing inputs) moves to a thread


@dataclass
class _Queued:
    """One request's rows waiting for a group commit."""

    rows: list[dict[str, Any]]
    deadline: float  # monotonic time by which they must be durable somewhere
    durable: asyncio.Future[bool]


class ReferralRecorder:
    """Owns the store connection, the spool and the webhook for one app."""

    def __init__(
        self,
        database_url: str,
        spool_path: str | Path,
        metrics: ReferralMetrics,
        store_inputs: bool = True,
        write_timeout_s: float = 0.5,
        webhook: WebhookSender | None = None,
        retry_interval_s: float = 5.0,
    ) -> None:
        self.database_url = database_url
        self.spool = Spool(spool_path)
        self.metrics = metrics
        self.store_inputs = store_inputs
        self.write_timeout_s = write_timeout_s
        self.webhook = webhook
        self.retry_interval_s = retry_interval_s
        self.store: ReferralStore | None = None
        self._db = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mcdrop-referral-db")
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mcdrop-referral-spool")
        self._in_flight = 0  # store commits not yet ended (a timed-out one may still land)
        self._down_until = 0.0  # while the store is failing, go straight to the spool
        self._queue: list[_Queued] = []
        self._queued = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._maintainer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Open (and migrate) the store, replay what an earlier run spooled, start the
        group writer, the background replay and the webhook. A store that is down does not
        stop start-up."""
        await self._open()
        await self.replay()
        self._writer = asyncio.create_task(self._write_groups(), name="mcdrop-referral-writer")
        self._maintainer = asyncio.create_task(self._maintain(), name="mcdrop-referral-replay")
        if self.webhook is not None:
            await self.webhook.start()

    async def stop(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        if self._writer is not None:  # rows on their way to the store or the spool
            waiting = [q.durable for q in self._queue]
            if waiting:
                await asyncio.wait(waiting, timeout=self.write_timeout_s + 10)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self.replay()
        if self.webhook is not None:
            await self.webhook.stop()
        self._db.shutdown(wait=False, cancel_futures=True)
        self._disk.shutdown(wait=True)
        if self.store is not None:
            self.store.close()

    @property
    def available(self) -> bool:
        return self.store is not None

    # ------------------------------------------------------------------ the prediction path

    async def record(
        self,
        name: str,
        model: MCDropoutModel,
        inputs: Rows,
        pred: Prediction,
        request_id: str,
    ) -> list[str | None]:
        """Referral ids per row (None for rows not referred, or lost); never raises."""
        ids: list[str | None] = [new_referral_id() if a else None for a in pred.abstain.tolist()]
        if not any(ids):
            return ids
        args = (name, model, inputs, pred, request_id, ids, self.store_inputs)
        if sum(i is not None for i in ids) <= _ROWS_BUILT_ON_LOOP:
            rows = referral_rows(*args)
        else:
            rows = await asyncio.to_thread(referral_rows, *args)
        loop = asyncio.get_running_loop()
        queued = _Queued(rows, time.monotonic() + self.write_timeout_s, loop.create_future())
        self._queue.append(queued)
        self._queued.set()
        if self._writer is None or self._writer.done():  # not started (or stopped): start it
            self._writer = asyncio.create_task(self._write_groups(), name="mcdrop-referral-writer")
        # The future belongs to the writer: a cancelled request must not cancel it.
        durable = await asyncio.shield(queued.durable)
        return ids if durable else [None] * len(ids)

    async def _write_groups(self) -> None:
        """The one writer: each turn takes every queued request's rows as one group."""
        while True:
            if not self._queue:
                self._queued.clear()
                await self._queued.wait()
                continue
            group, self._queue = self._queue, []
            durable = await self._persist(group)
            for q in group:
                if not q.durable.done():
                    q.durable.set_result(durable)

    async def _persist(self, group: list[_Queued]) -> bool:
        rows = [r for q in group for r in q.rows]
        try:
            deadline = min(q.deadline for q in group)
            if await self._write(rows, deadline) or await self._to_spool(rows):
                return True
        except Exception:  # never let bookkeeping fail a prediction
            log.exception("referral write failed unexpectedly")
        self.metrics.lost.inc(len(rows))
        return False

    async def _write(self, rows: list[dict[str, Any]], deadline: float) -> bool:
        store = self.store
        if store is None or time.monotonic() < self._down_until:
            self.metrics.store_failures.labels("unavailable").inc(len(rows))
            return False
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        done: Future[list[str]] = self._db.submit(store.add, rows)
        # Runs whenever the insert ends, even after we stopped waiting: a late success still
        # counts and notifies (the spooled copy is then skipped on replay).
        done.add_done_callback(lambda f: loop.call_soon_threadsafe(self._write_ended, f, rows))
        try:
            # Rows that queued behind a slow commit have less of their timeout left; a
            # floor keeps a group that is already late from being spooled without a try.
            timeout = max(deadline - time.monotonic(), 0.001)
            await asyncio.wait_for(asyncio.wrap_future(done), timeout)
            return True
        except TimeoutError:
            reason = "timeout"
        except Exception as e:
            reason = "error"
            log.warning("referral store write failed (%s: %s); spooling", type(e).__name__, e)
        self.metrics.store_failures.labels(reason).inc(len(rows))
        self._down_until = time.monotonic() + self.retry_interval_s
        return False

    def _write_ended(self, done: Future[list[str]], rows: list[dict[str, Any]]) -> None:
        self._in_flight -= 1
        if done.cancelled() or done.exception() is not None:
            return
        inserted = set(done.result())
        self._down_until = 0.0  # slow but working: the next write tries the store again
        self.metrics.recorded.labels("direct").inc(len(inserted))
        self.metrics.committed("store", len(rows))
        if self.webhook is not None:
            self.webhook.notify([r for r in rows if r["id"] in inserted])

    async def _to_spool(self, rows: list[dict[str, Any]]) -> bool:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._disk, self.spool.append, rows)
        except OSError as e:
            log.error(
                "referral spool %s failed (%s); %d referral(s) lost", self.spool.path, e, len(rows)
            )
            return False
        self.metrics.spooled.inc(len(rows))
        self.metrics.spool_pending.inc(len(rows))
        self.metrics.committed("spool", len(rows))
        return True

    # ------------------------------------------------------------------ background

    async def _open(self) -> bool:
        if self.store is not None:
            return True
        loop = asyncio.get_running_loop()
        try:
            self.store = await loop.run_in_executor(self._db, open_warm, self.database_url)
        except Exception as e:
            log.error(
                "referral store %s is unavailable (%s: %s); referrals go to the spool %s "
                "until it is back",
                redacted(self.database_url),
                type(e).__name__,
                e,
                self.spool.path,
            )
            return False
        log.info("referral store: %s", redacted(self.database_url))
        return True

    async def replay(self) -> int:
        """Move every spooled row into the store; returns how many were new to it."""
        if self.store is None:
            return 0
        store, loop = self.store, asyncio.get_running_loop()
        try:
            replayed = await loop.run_in_executor(self._db, replay_spool, self.spool, store)
        except Exception as e:
            log.warning("referral spool replay failed (%s: %s); will retry", type(e).__name__, e)
            return 0
        finally:
            with contextlib.suppress(OSError):
                self.metrics.spool_pending.set(self.spool.pending())
        if replayed:
            self._down_until = 0.0
            log.info("replayed %d spooled referral(s) into the store", len(replayed))
            self.metrics.recorded.labels("replayed").inc(len(replayed))
            if self.webhook is not None:
                self.webhook.notify(replayed)
        return len(replayed)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval_s)
            if await self._open() and (self.spool.waiting() or self.spool.path.exists()):
                await self.replay()


def recorder_from_settings(settings: Any, registry: Any = None) -> ReferralRecorder:
    """The recorder a `service.config.Settings` describes; metrics go to `registry` (the app's
    Prometheus CollectorRegistry)."""
    metrics = ReferralMetrics(registry)
    webhook = None
    if settings.referral_webhook:
        webhook = WebhookSender(
            settings.referral_webhook, metrics, timeout_s=settings.referral_webhook_timeout_s
        )
    return ReferralRecorder(
        settings.database_url,
        settings.referral_spool,
        metrics,
        store_inputs=settings.referral_store_inputs,
        write_timeout_s=settings.referral_write_timeout_ms / 1000,
        webhook=webhook,
    )

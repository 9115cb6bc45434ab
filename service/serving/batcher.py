"""Dynamic batching: concurrent jobs for the same model run as one engine pass.

Each job keeps its own rows, T, seed and first sample inside the batch (its masks depend on its
seed, rows and sample indices only), so a batched job returns exactly what it would alone; the
threshold and metric never enter the batch at all (they are applied to the job's samples
afterwards). Jobs with different T are stacked, not padded: a batch costs Σ rows·T stacked rows.

Passes run on dedicated worker threads, one by default (MCDROP_ENGINE_WORKERS), so one pass
per worker at a time uses torch's thread pool and the event loop stays free. The workers form
the batches themselves: the event loop only appends jobs to a queue and receives results, one
callback per batch. So the next pass starts the moment a worker is free, with every job that
arrived meanwhile, even while the event loop is busy sending the previous batch's replies; the
pass and the HTTP work overlap instead of taking turns.

When to close a batch: a free worker runs the waiting jobs (oldest model queue first) as soon
as either
- as many jobs are waiting as the previous batch held (the recent concurrency: at concurrency 1
  a job runs at once and the batcher adds no wait), or
- the oldest job has waited `wait_ms`, or
- the stacked rows reach the budget max_rows × (largest T in the batch).
With several workers, a batch takes at most its worker's share of the model's jobs in flight
(waiting + running, divided by the workers), so concurrent requests spread over the workers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.serving.model import MCDropoutModel

log = logging.getLogger(__name__)

# on_batch(model_name, rows, jobs, queue_delay_s): rows = stacked rows Σ N·T of the pass,
# queue_delay_s = how long the batch's oldest job waited before the pass started.
BatchHook = Callable[[str, int, int, float], None]

Result = NDArray[np.float32] | BaseException


@dataclass
class _Pending:
    job: SampleJob
    future: asyncio.Future[NDArray[np.float32]]
    enqueued: float  # time.monotonic()


@dataclass
class _ModelQueue:
    model: MCDropoutModel
    waiting: list[_Pending] = field(default_factory=list)
    last_batch_jobs: int = 1
    running: int = 0  # jobs taken by a worker whose results are not yet handed back


class BatchingRunner:
    """Gathers concurrent jobs per model for at most wait_ms, up to max_rows × T stacked rows."""

    def __init__(
        self,
        wait_ms: float,
        max_rows: int,
        on_batch: BatchHook | None = None,
        workers: int = 1,
    ) -> None:
        if wait_ms < 0 or max_rows < 1 or workers < 1:
            raise ValueError("wait_ms must be >= 0, max_rows >= 1 and workers >= 1")
        self.wait_s = wait_ms / 1000.0
        self.max_rows = max_rows
        self.on_batch = on_batch
        self.workers = workers
        # Guards _queues and _stopping; the workers wait on it for jobs or a batch deadline.
        self._cond = threading.Condition()
        self._queues: dict[int, _ModelQueue] = {}
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        if not self._threads:
            self._loop = asyncio.get_running_loop()
            self._stopping = False
            self._threads = [
                threading.Thread(target=self._work, name=f"mcdrop-batch-{i}", daemon=True)
                for i in range(self.workers)
            ]
            for thread in self._threads:
                thread.start()

    async def stop(self) -> None:
        threads = self._threads
        if not threads:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in threads:  # the passes in flight finish and are delivered
            await asyncio.to_thread(thread.join)
        await asyncio.sleep(0)  # let those delivery callbacks run
        with self._cond:
            left = [p for q in self._queues.values() for p in q.waiting]
            self._queues.clear()
        for p in left:
            if not p.future.done():
                p.future.cancel()
        self._threads = []

    async def sample(self, model: MCDropoutModel, job: SampleJob) -> NDArray[np.float32]:
        if not self._threads:
            raise RuntimeError("BatchingRunner.sample called before start()")
        future: asyncio.Future[NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        with self._cond:
            q = self._queues.get(id(model))
            if q is None or q.model is not model:
                self._forget_idle_versions(model)
                q = self._queues[id(model)] = _ModelQueue(model)
            q.waiting.append(_Pending(job, future, time.monotonic()))
            self._cond.notify()
        return await future

    def _forget_idle_versions(self, model: MCDropoutModel) -> None:
        """After a hot reload, drop idle queues of the model's previous versions, so they do not
        keep the old weights alive (a batch already taken keeps its own reference). Called with
        the lock held."""
        for key, q in list(self._queues.items()):
            if q.model is not model and q.model.name == model.name and not q.waiting:
                del self._queues[key]

    # ------------------------------------------------------------------ the worker thread

    def _work(self) -> None:
        while True:
            with self._cond:
                taken = self._next_batch()
            if taken is None:
                return
            q, batch, delay = taken
            results = _run(q.model, batch)
            with self._cond:
                q.running -= len(batch)
            rows = sum(p.job.rows * p.job.samples for p in batch)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(
                    self._deliver, q.model.name, batch, results, rows, delay
                )
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _next_batch(self) -> tuple[_ModelQueue, list[_Pending], float] | None:
        """Wait (holding the condition) until a batch is worth running; None when stopping."""
        while not self._stopping:
            for q in self._queues.values():
                # A cancelled caller's job is dropped (done() is a plain read, safe here).
                q.waiting = [p for p in q.waiting if not p.future.done()]
            busy = [q for q in self._queues.values() if q.waiting]
            if not busy:
                self._cond.wait()
                continue
            q = min(busy, key=lambda q: q.waiting[0].enqueued)
            now = time.monotonic()
            deadline = q.waiting[0].enqueued + self.wait_s
            if len(q.waiting) < q.last_batch_jobs and not self._full(q) and now < deadline:
                self._cond.wait(deadline - now)
                continue
            # With several workers, a worker takes its share of the model's jobs in flight, so
            # that the others find theirs waiting and the passes run side by side (with one,
            # running is 0 here and the share is every waiting job).
            share = -(-(len(q.waiting) + q.running) // self.workers)
            batch = self._take(q, share)
            q.last_batch_jobs = len(batch)
            q.running += len(batch)
            return q, batch, now - batch[0].enqueued
        return None

    def _full(self, q: _ModelQueue) -> bool:
        t_max = max(p.job.samples for p in q.waiting)
        return sum(p.job.rows * p.job.samples for p in q.waiting) >= self.max_rows * t_max

    def _take(self, q: _ModelQueue, most: int) -> list[_Pending]:
        """The oldest jobs, at most `most`, that fit the budget (at least one)."""
        batch: list[_Pending] = []
        stacked, t_max = 0, 0
        for p in q.waiting[:most]:
            t = max(t_max, p.job.samples)
            cost = stacked + p.job.rows * p.job.samples
            if batch and cost > self.max_rows * t:
                break
            batch.append(p)
            stacked, t_max = cost, t
        del q.waiting[: len(batch)]
        return batch

    # ------------------------------------------------------------------ back on the event loop

    def _deliver(
        self, model: str, batch: list[_Pending], results: list[Result], rows: int, delay: float
    ) -> None:
        for p, res in zip(batch, results, strict=True):
            if p.future.done():  # the caller went away (cancelled)
                continue
            if isinstance(res, BaseException):
                p.future.set_exception(res)
            else:
                p.future.set_result(res)
        if self.on_batch is not None:
            try:
                self.on_batch(model, rows, len(batch), delay)
            except Exception:  # a metrics hook must never stall the queue
                log.exception("on_batch hook failed")


def _run(model: MCDropoutModel, batch: list[_Pending]) -> list[Result]:
    """One pass for the batch; if it fails, each job alone, so one bad job fails only itself."""
    jobs = [p.job for p in batch]
    try:
        return list(model.engine.sample_many(jobs))
    except Exception as e:
        if len(jobs) == 1:
            return [e]
    results: list[Result] = []
    for job in jobs:
        try:
            results.append(model.engine.sample_many([job])[0])
        except Exception as e:
            results.append(e)
    return results


__all__ = ["BatchHook", "BatchingRunner"]

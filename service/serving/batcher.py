"""Dynamic batching: concurrent jobs for the same model run as one engine pass.

Each job keeps its own rows, T, seed and first sample inside the batch (the engine draws its
masks from the job's own streams), so a batched job returns exactly what it would alone; the
threshold and metric never enter the batch at all (they are applied to the job's samples
afterwards). Jobs with different T are stacked, not padded: a batch costs Σ rows·T stacked rows.

When to close a batch: a batch is dispatched as soon as the worker is free and either
- as many jobs are waiting as the previous batch held (the recent concurrency: at concurrency 1
  a job runs at once and the batcher adds no wait), or
- the oldest job has waited `wait_ms`, or
- the stacked rows reach the budget max_rows × (largest T in the batch).
While a pass runs, new jobs queue up and form the next batch. All passes run on one dedicated
worker thread, so one pass at a time uses torch's thread pool and the event loop stays free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.model import MCDropoutModel

log = logging.getLogger(__name__)

# on_batch(model_name, rows, jobs, queue_delay_s): rows = stacked rows Σ N·T of the pass,
# queue_delay_s = how long the batch's oldest job waited before the pass started.
BatchHook = Callable[[str, int, int, float], None]


@dataclass
class _Pending:
    job: SampleJob
    future: asyncio.Future[NDArray[np.float32]]
    enqueued: float


@dataclass
class _ModelQueue:
    model: MCDropoutModel
    waiting: list[_Pending] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    last_batch_jobs: int = 1


class BatchingRunner:
    """Gathers concurrent jobs per model for at most wait_ms, up to max_rows × T stacked rows."""

    def __init__(self, wait_ms: float, max_rows: int, on_batch: BatchHook | None = None) -> None:
        if wait_ms < 0 or max_rows < 1:
            raise ValueError("wait_ms must be >= 0 and max_rows >= 1")
        self.wait_s = wait_ms / 1000.0
        self.max_rows = max_rows
        self.on_batch = on_batch
        self._queues: dict[int, _ModelQueue] = {}
        self._worker: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="mcdrop-batch")

    async def stop(self) -> None:
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for q in self._queues.values():
            for p in q.waiting:
                if not p.future.done():
                    p.future.cancel()
        self._queues.clear()
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    async def sample(self, model: MCDropoutModel, job: SampleJob) -> NDArray[np.float32]:
        if self._worker is None:
            raise RuntimeError("BatchingRunner.sample called before start()")
        loop = asyncio.get_running_loop()
        q = self._queues.get(id(model))
        if q is None or q.model is not model:
            self._forget_idle_versions(model)
            q = self._queues[id(model)] = _ModelQueue(model)
        pending = _Pending(job, loop.create_future(), loop.time())
        q.waiting.append(pending)
        q.arrived.set()
        if q.task is None or q.task.done():
            q.task = loop.create_task(self._serve(q))
        return await pending.future

    def _forget_idle_versions(self, model: MCDropoutModel) -> None:
        """After a hot reload, drop idle queues of the model's previous versions, so they do not
        keep the old weights alive. A queue with work left finishes it on the old version."""
        for key, q in list(self._queues.items()):
            idle = not q.waiting and (q.task is None or q.task.done())
            if q.model is not model and q.model.name == model.name and idle:
                del self._queues[key]

    # ------------------------------------------------------------------ the model's loop

    async def _serve(self, q: _ModelQueue) -> None:
        loop = asyncio.get_running_loop()
        while q.waiting:
            await self._gather(q, loop)
            batch = self._take(q)
            if not batch:
                continue
            q.last_batch_jobs = len(batch)
            delay = loop.time() - batch[0].enqueued
            rows = sum(p.job.rows * p.job.samples for p in batch)
            assert self._worker is not None
            results = await loop.run_in_executor(self._worker, _run, q.model, batch)
            for p, res in zip(batch, results, strict=True):
                if p.future.done():  # the caller went away (cancelled)
                    continue
                if isinstance(res, BaseException):
                    p.future.set_exception(res)
                else:
                    p.future.set_result(res)
            if self.on_batch is not None:
                try:
                    self.on_batch(q.model.name, rows, len(batch), delay)
                except Exception:  # a metrics hook must never stall the queue
                    log.exception("on_batch hook failed")

    async def _gather(self, q: _ModelQueue, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the batch is worth running (see the module docstring)."""
        deadline = q.waiting[0].enqueued + self.wait_s
        while not self._full(q) and len(q.waiting) < q.last_batch_jobs:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            q.arrived.clear()
            try:
                await asyncio.wait_for(q.arrived.wait(), remaining)
            except TimeoutError:
                return

    def _full(self, q: _ModelQueue) -> bool:
        t_max = max(p.job.samples for p in q.waiting)
        return sum(p.job.rows * p.job.samples for p in q.waiting) >= self.max_rows * t_max

    def _take(self, q: _ModelQueue) -> list[_Pending]:
        """The oldest jobs that fit the budget (at least one), dropping cancelled ones."""
        q.waiting = [p for p in q.waiting if not p.future.done()]
        batch: list[_Pending] = []
        stacked, t_max = 0, 0
        for p in q.waiting:
            t = max(t_max, p.job.samples)
            cost = stacked + p.job.rows * p.job.samples
            if batch and cost > self.max_rows * t:
                break
            batch.append(p)
            stacked, t_max = cost, t
        del q.waiting[: len(batch)]
        return batch


def _run(model: MCDropoutModel, batch: list[_Pending]) -> list[NDArray[np.float32] | BaseException]:
    """One pass for the batch; if it fails, each job alone, so one bad job fails only itself."""
    jobs = [p.job for p in batch]
    try:
        return list(model.engine.sample_many(jobs))
    except Exception as e:
        if len(jobs) == 1:
            return [e]
    results: list[NDArray[np.float32] | BaseException] = []
    for job in jobs:
        try:
            results.append(model.engine.sample_many([job])[0])
        except Exception as e:
            results.append(e)
    return results


__all__ = ["BatchHook", "BatchingRunner"]

"""Runners draw a request's MC samples off the event loop.

The API awaits `runner.sample(model, job)` and gets the job's (T, N, D) samples back. The plain
`DirectRunner` runs one job at a time per engine worker (one by default): one thread keeps one
BLAS pool busy (parallel jobs would fight over the cores), and the event loop
stays free, so /health/live answers while a large request computes. A batching runner merges
concurrent jobs into shared passes behind the same protocol.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.serving.model import MCDropoutModel


class Runner(Protocol):
    """How the serving layer gets samples: start once, sample many times, stop once."""

    async def start(self) -> None:
        """Acquire threads or tasks; called by the app's lifespan before serving."""
        ...

    async def stop(self) -> None:
        """Finish or cancel pending work and release threads; called at shutdown."""
        ...

    async def sample(self, model: MCDropoutModel, job: SampleJob) -> NDArray[np.float32]:
        """The job's (T, N, D) raw samples from the model's engine."""
        ...


class DirectRunner:
    """One job per engine call, in arrival order, on `workers` threads (one job at a time each;
    see MCDROP_ENGINE_WORKERS)."""

    def __init__(self, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="mcdrop-mc")

    async def stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Let the job in flight finish (its client may still be waiting); drop queued ones.
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def sample(self, model: MCDropoutModel, job: SampleJob) -> NDArray[np.float32]:
        if self._executor is None:
            raise RuntimeError("DirectRunner.sample called before start()")
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._executor, model.engine.sample_many, [job])
        return out[0]

"""How the HTTP layer asks for MC samples: a Runner takes one job and returns its (T, N, D) samples.

DirectRunner runs each job as its own pass on a worker thread; BatchingRunner (batcher.py)
gathers concurrent jobs for the same model into one pass.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.model import MCDropoutModel


class Runner(Protocol):
    """Runs sample jobs for loaded models without blocking the event loop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def sample(self, model: MCDropoutModel, job: SampleJob) -> NDArray[np.float32]:
        """The job's (T, N, D) raw samples."""
        ...


class DirectRunner:
    """One pass per request, on the default thread pool (no batching)."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def sample(self, model: MCDropoutModel, job: SampleJob) -> NDArray[np.float32]:
        return (await asyncio.to_thread(model.engine.sample_many, [job]))[0]

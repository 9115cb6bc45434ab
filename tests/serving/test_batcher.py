"""The dynamic batcher: batched answers equal lone ones, batches form, errors stay local."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.serving.batcher import BatchingRunner
from service.serving.model import MCDropoutModel, load_model
from service.serving.runner import DirectRunner


@pytest.fixture(scope="module")
def model(tiny_regression_dir: Path) -> MCDropoutModel:
    return load_model(tiny_regression_dir, device="cpu")


def _job(model: MCDropoutModel, rows: int, samples: int, seed: int) -> SampleJob:
    x = np.random.default_rng(seed).standard_normal((rows, 3))
    return SampleJob(model.prepare(x), samples, seed)


async def _run_concurrently(
    runner: BatchingRunner, model: MCDropoutModel, jobs: list[SampleJob]
) -> list[NDArray[np.float32] | BaseException]:
    await runner.start()
    try:
        return await asyncio.gather(
            *(runner.sample(model, j) for j in jobs), return_exceptions=True
        )
    finally:
        await runner.stop()


def test_batched_equals_alone_and_keeps_each_jobs_parameters(model: MCDropoutModel) -> None:
    batches: list[tuple[str, int, int, float]] = []
    runner = BatchingRunner(wait_ms=200, max_rows=10_000, on_batch=lambda *a: batches.append(a))
    # Different rows, T and seeds in one batch; the first job runs alone (nothing to wait for),
    # the other five arrive while it runs and must form one batch.
    jobs = [_job(model, 1 + i % 3, 10 + 7 * i, seed=100 + i) for i in range(6)]
    results = asyncio.run(_run_concurrently(runner, model, jobs))
    for job, res in zip(jobs, results, strict=True):
        alone = model.engine.sample_many([job])[0]
        assert isinstance(res, np.ndarray)
        assert res.shape == (job.samples, job.rows, 1)
        np.testing.assert_allclose(res, alone, rtol=1e-5, atol=1e-6)
    assert sum(b[2] for b in batches) == len(jobs)
    assert max(b[2] for b in batches) >= 2, f"no batch formed: {batches}"
    assert all(b[0] == model.name and b[3] >= 0 for b in batches)
    assert sum(b[1] for b in batches) == sum(j.rows * j.samples for j in jobs)


def test_budget_limits_a_batch(model: MCDropoutModel) -> None:
    batches: list[tuple[str, int, int, float]] = []
    runner = BatchingRunner(wait_ms=200, max_rows=2, on_batch=lambda *a: batches.append(a))
    jobs = [_job(model, 1, 20, seed=i) for i in range(7)]
    asyncio.run(_run_concurrently(runner, model, jobs))
    # Budget 2 rows x T=20: at most two one-row jobs per pass.
    assert all(b[1] <= 2 * 20 for b in batches)
    assert sum(b[2] for b in batches) == 7


class _Failing:
    """An engine wrapper that fails any pass containing a job with the poisoned seed."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def sample_many(self, jobs: list[SampleJob]) -> list[np.ndarray]:
        if any(j.seed == 666 for j in jobs):
            raise RuntimeError("poisoned job")
        return self.inner.sample_many(jobs)  # type: ignore[attr-defined,no-any-return]


def test_an_error_in_one_job_does_not_fail_the_others(model: MCDropoutModel) -> None:
    bad = MCDropoutModel(model.folder, model.manifest, _Failing(model.engine))  # type: ignore[arg-type]
    runner = BatchingRunner(wait_ms=200, max_rows=10_000)
    jobs = [_job(model, 2, 15, seed=s) for s in (1, 666, 2, 3)]
    results = asyncio.run(_run_concurrently(runner, bad, jobs))
    assert isinstance(results[1], RuntimeError)
    for i in (0, 2, 3):
        result = results[i]
        assert isinstance(result, np.ndarray)
        np.testing.assert_allclose(result, model.engine.sample_many([jobs[i]])[0], rtol=1e-5)


def test_direct_runner_matches(model: MCDropoutModel) -> None:
    job = _job(model, 2, 12, seed=5)

    async def go() -> np.ndarray:
        r = DirectRunner()
        await r.start()
        out = await r.sample(model, job)
        await r.stop()
        return out

    np.testing.assert_array_equal(asyncio.run(go()), model.engine.sample_many([job])[0])


class _SlowRecording:
    """An engine wrapper that holds each pass 50 ms and records how many run at once."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0

    def sample_many(self, jobs: list[SampleJob]) -> list[np.ndarray]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.05)
            return self.inner.sample_many(jobs)  # type: ignore[attr-defined,no-any-return]
        finally:
            with self.lock:
                self.running -= 1


def test_several_workers_run_passes_side_by_side_with_the_same_answers(
    model: MCDropoutModel,
) -> None:
    engine = _SlowRecording(model.engine)
    slow = MCDropoutModel(model.folder, model.manifest, engine)  # type: ignore[arg-type]
    batches: list[tuple[str, int, int, float]] = []
    runner = BatchingRunner(
        wait_ms=20, max_rows=10_000, on_batch=lambda *a: batches.append(a), workers=2
    )
    jobs = [_job(model, 2, 12, seed=200 + i) for i in range(8)]
    results = asyncio.run(_run_concurrently(runner, slow, jobs))
    for job, res in zip(jobs, results, strict=True):
        assert isinstance(res, np.ndarray)
        np.testing.assert_allclose(res, model.engine.sample_many([job])[0], rtol=1e-5, atol=1e-6)
    assert engine.most == 2  # two passes overlapped, never more than the workers
    # Each batch is at most its worker's share of the 8 jobs in flight.
    assert sum(b[2] for b in batches) == 8 and max(b[2] for b in batches) <= 4


def test_direct_runner_with_two_workers_overlaps_jobs(model: MCDropoutModel) -> None:
    engine = _SlowRecording(model.engine)
    slow = MCDropoutModel(model.folder, model.manifest, engine)  # type: ignore[arg-type]
    jobs = [_job(model, 1, 8, seed=300 + i) for i in range(4)]

    async def run() -> list[np.ndarray]:
        runner = DirectRunner(workers=2)
        await runner.start()
        try:
            return list(await asyncio.gather(*(runner.sample(slow, j) for j in jobs)))
        finally:
            await runner.stop()

    results = asyncio.run(run())
    for job, res in zip(jobs, results, strict=True):
        np.testing.assert_array_equal(res, model.engine.sample_many([job])[0])
    assert engine.most == 2

"""Summaries vectorised over a batch: each job's result equals its lone summary, bit for bit."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.errors import InvalidInput
from service.serving import summary
from service.serving.batcher import BatchingRunner
from service.serving.model import MCDropoutModel, load_model
from service.serving.results import Prediction
from service.serving.runner import DirectRunner
from service.serving.summary import SummarySpec, summarize_many


@pytest.fixture(scope="module")
def regression(tiny_regression_dir: Path) -> MCDropoutModel:
    return load_model(tiny_regression_dir, device="cpu")


@pytest.fixture(scope="module")
def classifier(tiny_classifier_dir: Path) -> MCDropoutModel:
    return load_model(tiny_classifier_dir, device="cpu")


def _jobs(model: MCDropoutModel) -> list[SampleJob]:
    """Mixed T (two share T=12, so their rows are stacked) and mixed rows, one of them single."""
    shape = model.manifest.input_shape
    out = []
    for i, (rows, t) in enumerate([(1, 12), (3, 12), (2, 7), (1, 30), (4, 12)]):
        x = np.random.default_rng(i).standard_normal((rows, *shape))
        out.append(SampleJob(model.prepare(x), t, 50 + i))
    return out


def _specs(model: MCDropoutModel) -> list[SummarySpec]:
    metrics = list(
        ("std", "variance", "epistemic_std")
        if model.task == "regression"
        else ("predictive_entropy", "mutual_information", "variation_ratio")
    )
    return [
        SummarySpec(
            threshold=[None, 0.01, 0.5, 5.0, 0.2][i],
            metric=metrics[i % 3] if i else None,
            return_samples=i % 2 == 0,
        )
        for i in range(5)
    ]


def _assert_same(got: Prediction, want: Prediction) -> None:
    assert type(got) is type(want)
    for f in dataclasses.fields(want):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if isinstance(b, np.ndarray):
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype, f.name
            np.testing.assert_array_equal(a, b, err_msg=f.name, strict=True)
        else:
            assert a == b, f.name


@pytest.mark.parametrize("task", ["regression", "classifier"])
def test_batched_summaries_equal_lone_ones(
    task: str, regression: MCDropoutModel, classifier: MCDropoutModel
) -> None:
    model = regression if task == "regression" else classifier
    jobs, specs = _jobs(model), _specs(model)
    raws = [model.engine.sample_many([j])[0] for j in jobs]
    batched = summarize_many(model, raws, [j.seed for j in jobs], specs)
    for raw, job, spec, got in zip(raws, jobs, specs, batched, strict=True):
        assert isinstance(got, Prediction)
        want = model.summarize(raw, job.seed, spec.threshold, spec.metric, spec.return_samples)
        _assert_same(got, want)
        assert (got.raw_samples is not None) == spec.return_samples


@pytest.mark.parametrize("task", ["regression", "classifier"])
def test_runners_predict_what_the_model_summarises(
    task: str, regression: MCDropoutModel, classifier: MCDropoutModel
) -> None:
    model = regression if task == "regression" else classifier
    jobs, specs = _jobs(model), _specs(model)

    async def run(runner: BatchingRunner | DirectRunner) -> list[Prediction]:
        await runner.start()
        try:
            return list(
                await asyncio.gather(
                    *(runner.predict(model, j, s) for j, s in zip(jobs, specs, strict=True))
                )
            )
        finally:
            await runner.stop()

    batches: list[tuple[str, int, int, float]] = []
    batching = BatchingRunner(wait_ms=200, max_rows=10_000, on_batch=lambda *a: batches.append(a))
    for results in (asyncio.run(run(batching)), asyncio.run(run(DirectRunner()))):
        for job, spec, got in zip(jobs, specs, results, strict=True):
            raw = model.engine.sample_many([job])[0]
            want = model.summarize(raw, job.seed, spec.threshold, spec.metric, spec.return_samples)
            _assert_same(got, want)
    assert max(b[2] for b in batches) >= 2, f"no batch formed: {batches}"


@pytest.mark.parametrize("task", ["regression", "classifier"])
@pytest.mark.parametrize("t", [9, 100, 1000])
def test_each_rows_reductions_ignore_the_rows_beside_it(
    task: str, t: int, regression: MCDropoutModel, classifier: MCDropoutModel
) -> None:
    # Many samples of one row and one output: numpy's reductions pick their summation order from
    # the array's layout, which a batch changes; the summary must not depend on it.
    model = regression if task == "regression" else classifier
    d = 1 if task == "regression" else classifier.manifest.architecture.output_dim
    rng = np.random.default_rng(t)
    raws = [(rng.standard_normal((t, n, d)) * 3 + 100).astype(np.float32) for n in (1, 5, 2)]
    batched = summarize_many(model, raws, [0, 0, 0], [SummarySpec()] * 3)
    for raw, got in zip(raws, batched, strict=True):
        assert isinstance(got, Prediction)
        _assert_same(got, model.summarize(raw, 0))


def test_a_failing_job_fails_alone(regression: MCDropoutModel) -> None:
    jobs = _jobs(regression)
    specs = _specs(regression)
    specs[1] = SummarySpec(metric="no-such-metric")  # shares T=12 with jobs 0 and 4
    raws = [regression.engine.sample_many([j])[0] for j in jobs]
    out = summarize_many(regression, raws, [j.seed for j in jobs], specs)
    assert isinstance(out[1], InvalidInput)
    assert all(isinstance(r, Prediction) for i, r in enumerate(out) if i != 1)


def test_a_group_whose_shared_step_fails_is_summarised_job_by_job(
    regression: MCDropoutModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = summary.summarize_rows

    def single_rows_only(model: MCDropoutModel, raw: NDArray[np.float32]) -> summary.RowSummary:
        if raw.shape[1] != 1:
            raise ValueError("more than one row")
        return real(model, raw)

    monkeypatch.setattr(summary, "summarize_rows", single_rows_only)
    jobs = _jobs(regression)
    raws = [regression.engine.sample_many([j])[0] for j in jobs]
    out = summarize_many(regression, raws, [j.seed for j in jobs], [SummarySpec()] * len(jobs))
    assert [isinstance(r, Prediction) for r in out] == [j.rows == 1 for j in jobs]


def test_non_finite_samples_summarise_quietly(regression: MCDropoutModel) -> None:
    raws = [np.full((5, 1, 1), np.inf, np.float32), np.ones((5, 2, 1), np.float32)]
    with np.errstate(all="raise"):
        out = summarize_many(regression, raws, [1, 2], [SummarySpec()] * 2)
    assert isinstance(out[0], Prediction) and bool(out[0].abstain[0])
    assert isinstance(out[1], Prediction) and not out[1].abstain.any()

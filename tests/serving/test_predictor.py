"""Predictor limits that the HTTP tests do not reach."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.errors import InvalidInput
from service.serving.finite import OVERFLOW_REASON, abstain_non_finite
from service.serving.predictor import Limits, Predictor, PredictParams
from service.serving.registry import ModelRegistry
from service.serving.results import RegressionResult
from service.serving.runner import DirectRunner

pytestmark = pytest.mark.anyio


def _prediction(mean: list[float]) -> RegressionResult:
    m = np.asarray(mean, np.float64)[:, None]
    return RegressionResult(
        samples=2,
        seed=0,
        metric="std",
        threshold=1.0,
        mean=m,
        variance=np.ones_like(m),
        uncertainty=np.ones(len(mean)),
        abstain=np.zeros(len(mean), bool),
        std=np.ones_like(m),
        epistemic_variance=np.ones_like(m),
        aleatoric_variance=np.ones_like(m),
    )


def test_non_finite_rows_abstain_with_a_reason_and_finite_placeholders() -> None:
    fine = abstain_non_finite(_prediction([1.0, 2.0]))
    assert fine.reason is None and not fine.abstain.any()
    # Finite values whose sum overflows (the quick check's false alarm) still abstain nowhere.
    huge = abstain_non_finite(_prediction([1e308, 1e308]))
    assert huge.reason is None and not huge.abstain.any()
    assert huge.mean[:, 0].tolist() == [1e308, 1e308]
    pred = _prediction([1.0, np.inf, 0.0, np.nan])
    pred.variance[2, 0] = np.inf  # a row whose mean is finite but whose variance overflowed
    out = abstain_non_finite(pred)
    assert out.abstain.tolist() == [False, True, True, True]
    assert out.reason == [None, OVERFLOW_REASON, OVERFLOW_REASON, OVERFLOW_REASON]
    assert np.isfinite(out.mean).all() and np.isfinite(out.variance).all()
    assert out.mean[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0]  # good rows untouched


async def test_samples_times_rows_cap(tmp_path: Path, tiny_regression_dir: Path) -> None:
    import shutil

    shutil.copytree(tiny_regression_dir, tmp_path / "m")
    registry = ModelRegistry(tmp_path)
    registry.load_all()
    runner = DirectRunner()
    predictor = Predictor(registry, runner, Limits(max_sample_rows=100))
    await runner.start()
    try:
        with pytest.raises(InvalidInput, match="over the limit of 100"):
            await predictor.infer("m", [[0.0, 0.0, 0.0]] * 3, PredictParams(samples=34))
        ok = await predictor.infer("m", [[0.0, 0.0, 0.0]] * 3, PredictParams(samples=33))
        assert ok.result.mean.shape == (3, 1)
    finally:
        await runner.stop()

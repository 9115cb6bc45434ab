"""samples "auto" on the shipped models, through the real engines: a row that stopped after k
samples reports exactly what a fixed run of the same seed reports from its first k samples."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits

from service.engines.base import SampleJob
from service.engines.onnx_export import export_onnx
from service.engines.runtime import EngineName, EngineRuntime
from service.serving.predictor import Limits, Predictor, PredictParams
from service.serving.registry import ModelRegistry
from service.serving.results import AdaptiveStats, Prediction
from service.serving.runner import DirectRunner
from tests.conftest import MODELS

SEED = 3


async def _auto(
    predictor: Predictor, name: str, rows: list[list[float]], **options: Any
) -> tuple[Prediction, AdaptiveStats]:
    """samples "auto" through the one data plane: the result and its per-row extras."""
    out = await predictor.infer(name, rows, PredictParams(samples="auto", **options))
    assert out.result.adaptive is not None
    return out.result, out.result.adaptive


def _rows(name: str) -> list[list[float]]:
    data = load_diabetes() if name == "diabetes" else load_digits()
    x = np.asarray(data.data[:40], dtype=np.float64)
    rows: list[list[float]] = x.tolist()
    return rows


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "engine"), [("diabetes", "torch"), ("digits", "torch"), ("digits", "onnx")]
)
async def test_adaptive_rows_report_the_fixed_runs_first_samples(
    name: str, engine: EngineName, tmp_path: Path
) -> None:
    shutil.copytree(MODELS / name, tmp_path / name, ignore=shutil.ignore_patterns("model.onnx"))
    if engine == "onnx":
        export_onnx(tmp_path / name, samples=200)
    registry = ModelRegistry(tmp_path, runtime=EngineRuntime(engine, "cpu"))
    registry.load_all()
    predictor = Predictor(registry, DirectRunner(), Limits(max_sample_rows=10_000_000))
    await predictor.runner.start()
    model = predictor.model(name)
    rows = _rows(name)
    fixed = model.engine.sample_many([SampleJob(model.prepare(rows), 64, SEED)])[0]
    # A threshold amid the rows' uncertainties, so that rows stop at different rounds.
    thr = float(np.median(model.summarize(fixed, SEED).uncertainty))
    pred, out = await _auto(
        predictor,
        model.folder.name,
        rows,
        seed=SEED,
        threshold=thr,
        metric=None,
        max_samples=64,
        confidence=0.99,
    )
    await predictor.runner.stop()
    used = out.samples_used
    assert len(np.unique(used)) > 1, used  # else the comparison below would prove little
    for t in np.unique(used):
        idx = np.flatnonzero(used == t)
        ref = model.summarize(fixed[:t, idx], SEED, thr)
        np.testing.assert_allclose(pred.mean[idx], ref.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pred.uncertainty[idx], ref.uncertainty, rtol=1e-4, atol=1e-6)

"""Predictor.infer, the one data plane, and the typed results it returns."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import InvalidInput
from service.serving.hooks import Rows
from service.serving.model import MCDropoutModel
from service.serving.predictor import Limits, Predictor, PredictParams
from service.serving.registry import ModelRegistry
from service.serving.results import ClassificationResult, Prediction, RegressionResult
from service.serving.runner import DirectRunner

pytestmark = pytest.mark.anyio

COMMON = {
    "samples",
    "seed",
    "metric",
    "threshold",
    "mean",
    "variance",
    "uncertainty",
    "abstain",
    "raw_samples",
    "referral_ids",
    "reason",
    "adaptive",
}
# Fields that are None only when a request did not ask for them (or nothing was referred).
PER_REQUEST = {"raw_samples", "referral_ids", "reason", "adaptive"}


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Prediction]] = []

    def observe_prediction(self, model: str, result: Prediction) -> None:
        self.seen.append((model, result))


class Referrals:
    def __init__(self) -> None:
        self.rows: list[Rows] = []

    async def record(
        self, name: str, model: MCDropoutModel, inputs: Rows, pred: Prediction, request_id: str
    ) -> list[str | None]:
        self.rows.append(inputs)
        return [f"{request_id}-{i}" if a else None for i, a in enumerate(pred.abstain.tolist())]


@pytest.fixture
async def predictor(
    tmp_path: Path, tiny_regression_dir: Path, tiny_classifier_dir: Path
) -> AsyncIterator[Predictor]:
    shutil.copytree(tiny_regression_dir, tmp_path / "reg")
    shutil.copytree(tiny_classifier_dir, tmp_path / "clf")
    registry = ModelRegistry(tmp_path)
    registry.load_all()
    p = Predictor(registry, DirectRunner(), Limits(), referrals=Referrals(), observer=Observer())
    await p.runner.start()
    yield p
    await p.runner.stop()


def test_each_result_has_exactly_its_tasks_fields() -> None:
    reg = {f.name for f in fields(RegressionResult)}
    clf = {f.name for f in fields(ClassificationResult)}
    assert reg - COMMON == {"std", "epistemic_variance", "aleatoric_variance"}
    assert clf - COMMON == {
        "probabilities",
        "label",
        "predictive_entropy",
        "mutual_information",
        "variation_ratio",
    }
    # No field that one task always leaves empty: only per-request extras may be None.
    for cls in (RegressionResult, ClassificationResult):
        optional = {f.name for f in fields(cls) if "None" in str(f.type)}
        assert optional == PER_REQUEST, cls


@pytest.mark.parametrize(
    ("name", "cls", "width"), [("reg", RegressionResult, 3), ("clf", ClassificationResult, 4)]
)
async def test_an_array_and_the_same_rows_as_lists_give_the_same_answer(
    predictor: Predictor, name: str, cls: type, width: int
) -> None:
    x = np.random.default_rng(3).normal(size=(5, width))
    params = PredictParams(samples=20, seed=11, return_samples=True, refer=False)
    from_array = (await predictor.infer(name, x, params)).result
    from_lists = (await predictor.infer(name, x.tolist(), params)).result
    assert isinstance(from_array, cls) and isinstance(from_lists, cls)
    for key, value in from_array.outputs().items():
        np.testing.assert_array_equal(value, from_lists.outputs()[key], err_msg=key)
    assert from_array.raw_samples is not None and from_lists.raw_samples is not None
    np.testing.assert_array_equal(from_array.raw_samples, from_lists.raw_samples)


async def test_infer_counts_watches_and_refers_in_one_place(predictor: Predictor) -> None:
    width = predictor.model(None).manifest.input_size
    x = np.random.default_rng(4).normal(size=(6, width))
    # A threshold of 0 makes every row abstain, so every row is referred.
    params = PredictParams(samples=10, seed=1, threshold=0.0, request_id="r")
    out = await predictor.infer(None, x, params)  # None: the default model
    assert out.name == predictor.registry.default_name
    result = out.result
    assert result.abstain.all()
    assert result.referral_ids == [f"r-{i}" for i in range(6)]
    observer, referrals = predictor.observer, predictor.referrals
    assert isinstance(observer, Observer) and isinstance(referrals, Referrals)
    assert [(n, r.rows) for n, r in observer.seen] == [(out.name, 6)]
    assert observer.seen[0][1].referral_ids == result.referral_ids
    assert len(referrals.rows) == 1 and referrals.rows[0] is x
    # refer false: counted, not referred.
    quiet = await predictor.infer(
        out.name, x, PredictParams(samples=10, threshold=0.0, refer=False)
    )
    assert quiet.result.referral_ids is None and len(referrals.rows) == 1
    assert len(observer.seen) == 2


async def test_auto_counts_the_samples_each_row_drew(predictor: Predictor) -> None:
    x = np.random.default_rng(5).normal(size=(8, 3))
    params = PredictParams(samples="auto", seed=2, max_samples=64, refer=False)
    result = (await predictor.infer("reg", x, params)).result
    assert result.adaptive is not None
    used = result.adaptive.samples_used
    assert result.samples == int(used.max()) and result.samples_drawn == int(used.sum())
    observer = predictor.observer
    assert isinstance(observer, Observer)
    assert observer.seen[-1][1].samples_drawn == int(used.sum())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (PredictParams(samples=1), "samples"),
        (PredictParams(samples="auto", max_samples=1), "max_samples"),
        (PredictParams(samples=10_000, seed=0), "samples"),
        (PredictParams(samples="auto", max_samples=10_000), "max_samples"),
    ],
)
async def test_fixed_and_auto_share_the_limit_checks(
    tmp_path: Path, tiny_regression_dir: Path, params: PredictParams, field: str
) -> None:
    shutil.copytree(tiny_regression_dir, tmp_path / "reg")
    registry = ModelRegistry(tmp_path)
    registry.load_all()
    predictor = Predictor(registry, DirectRunner(), Limits(max_sample_rows=5_000))
    rows: Any = [[0.0, 0.0, 0.0]] * 2
    with pytest.raises(InvalidInput) as err:
        await predictor.infer("reg", rows, params)
    assert err.value.message.startswith(f"{field}: ")

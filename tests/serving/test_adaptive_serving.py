"""samples "auto" through the serving loop and the real engine: linear models whose true
uncertainty is known, so a wrong early decision can be counted."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.serving.predictor import Limits, Predictor, PredictParams
from service.serving.registry import ModelRegistry
from service.serving.results import AdaptiveStats, Prediction
from service.serving.runner import DirectRunner
from tests.helpers import linear_classifier_dir, linear_model_dir

W = np.array([1.0, -1.0, 0.5, 2.0])
KEEP = 0.5  # input dropout 0.5: each term w_i m_i x_i / keep is a fair coin flip
CLF_W = np.array([2.0, -1.0, 0.0])
CLF_B = np.array([0.3, 0.0, -0.2])


async def _auto(
    predictor: Predictor, name: str, rows: list[list[float]], **options: Any
) -> tuple[Prediction, AdaptiveStats]:
    """samples "auto" through the one data plane: the result and its per-row extras."""
    out = await predictor.infer(name, rows, PredictParams(samples="auto", **options))
    assert out.result.adaptive is not None
    return out.result, out.result.adaptive


@pytest.fixture
async def predictor(tmp_path: Path) -> Predictor:
    linear_model_dir(tmp_path / "lin", W, bias=0.3, input_rate=1 - KEEP, tau=4.0)
    linear_classifier_dir(tmp_path / "clf", CLF_W, CLF_B, input_rate=1 - KEEP)
    registry = ModelRegistry(tmp_path)
    registry.load_all()
    p = Predictor(registry, DirectRunner(), Limits(max_sample_rows=10_000_000))
    await p.runner.start()
    return p


def _true_std(x: np.ndarray) -> np.ndarray:
    # y = Σ w_i m_i x_i / keep + b with m_i ~ Bernoulli(keep): Var y = Σ w_i² x_i² (1-keep)/keep;
    # the std metric adds the noise 1/τ = 0.25.
    std: np.ndarray = np.sqrt((W**2 * x**2).sum(axis=1) * (1 - KEEP) / KEEP + 0.25)
    return std


@pytest.mark.anyio
async def test_wrong_early_decisions_stay_under_one_minus_confidence(predictor: Predictor) -> None:
    rng = np.random.default_rng(5)
    n = 1000
    x = rng.normal(size=(n, 4))
    # Scale each row so its true std lands uniformly in [0.6, 1.6] around the threshold 1.0.
    target = rng.uniform(0.6, 1.6, size=n)
    x *= np.sqrt((target**2 - 0.25) / (_true_std(x) ** 2 - 0.25))[:, None]
    truth = _true_std(x) > 1.0
    model = predictor.model("lin")
    pred, out = await _auto(
        predictor,
        model.folder.name,
        x.tolist(),
        seed=1,
        threshold=1.0,
        metric="std",
        max_samples=256,
        confidence=0.99,
    )
    early = out.decision_settled
    wrong = early & (pred.abstain != truth)
    # Binomial bound as in tests/maths/test_sequential.py: rate ≤ 0.01 + 3·sqrt(0.01·0.99/n).
    assert wrong.mean() <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / n)
    assert early.mean() > 0.5 and out.samples_used[early].max() < 256
    assert (out.samples_used[~early] == 256).all()
    await predictor.runner.stop()


def _entropy(p: np.ndarray) -> np.ndarray:
    out: np.ndarray = -np.sum(p * np.log(p), axis=-1)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def _true_clf(x: np.ndarray, metric: str) -> np.ndarray:
    # Each sample is softmax(w x / keep + b) (input kept, prob KEEP) or softmax(b): the T → ∞
    # mean is their KEEP-weighted mixture, so both measures are known exactly.
    a = _softmax(x[:, None] * CLF_W / KEEP + CLF_B)
    b = _softmax(CLF_B)[None, :]
    mix = KEEP * a + (1 - KEEP) * b
    h = _entropy(mix)
    if metric == "predictive_entropy":
        return h
    return h - KEEP * _entropy(a) - (1 - KEEP) * _entropy(b)


async def _wrong_early_clf(
    predictor: Predictor, metric: str, confidence: float
) -> tuple[float, float, int]:
    rng = np.random.default_rng(7)
    n = 1000
    x = rng.uniform(-4.0, 4.0, size=n)
    truth = _true_clf(x, metric)
    thr = float(np.median(truth))  # many rows near the threshold
    model = predictor.model("clf")
    pred, out = await _auto(
        predictor,
        model.folder.name,
        x[:, None].tolist(),
        seed=4,
        threshold=thr,
        metric=metric,
        max_samples=256,
        confidence=confidence,
    )
    early = out.decision_settled
    wrong = early & (pred.abstain != (truth > thr))
    return float(wrong.mean()), float(early.mean()), n


@pytest.mark.anyio
@pytest.mark.parametrize(
    "metric",
    [
        "predictive_entropy",
        # Known limit of the delta-method interval, not of the masks: an independent synthetic
        # sampler of the same two-point rows also stops 2.5-3% of rows on the wrong side (the
        # plug-in MI is biased by O(1/T), comparable to its SE at the first looks when the two
        # points are far apart and equally likely). Strict: fixing it turns this into a failure.
        pytest.param(
            "mutual_information",
            marks=pytest.mark.xfail(strict=True, reason="MI interval undercovers on 50/50 rows"),
        ),
    ],
)
async def test_classifier_wrong_early_decisions_through_the_engine(
    predictor: Predictor, metric: str
) -> None:
    # The same bound as above and in tests/maths/test_sequential.py, now with the engine's own masks
    # (a repeated mask would narrow the intervals and show up here as extra wrong decisions).
    rate, early, n = await _wrong_early_clf(predictor, metric, 0.99)
    assert rate <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / n), (rate, early)
    assert early > 0.15  # and rows do stop early
    # The check can fail: an overconfident rule (confidence 0.5) breaks the same bound.
    loose, _, _ = await _wrong_early_clf(predictor, metric, 0.5)
    assert loose > 0.01 + 3 * math.sqrt(0.01 * 0.99 / n)
    await predictor.runner.stop()


@pytest.mark.anyio
async def test_a_row_exactly_at_the_threshold_runs_to_the_cap(predictor: Predictor) -> None:
    # x = 0: every sample is the bias, so the std is exactly sqrt(1/τ) = 0.5 with zero MC error;
    # its interval is the point 0.5, which is on neither side of a threshold of 0.5.
    model = predictor.model("lin")
    rows = [[0.0] * 4, [5.0, 5.0, 5.0, 5.0]]
    pred, out = await _auto(
        predictor,
        model.folder.name,
        rows,
        seed=2,
        threshold=0.5,
        metric="std",
        max_samples=100,
        confidence=0.99,
    )
    assert out.samples_used.tolist() == [100, 16]
    assert out.decision_settled.tolist() == [False, True]
    assert pred.abstain.tolist() == [False, True]
    assert out.uncertainty_se[0] == 0.0
    await predictor.runner.stop()


@pytest.mark.anyio
async def test_rounds_continue_the_seed_streams(predictor: Predictor) -> None:
    # A row that never settles draws samples 0..T-1 over its rounds: the same samples as one
    # fixed run of T with the same seed, so the same mean and uncertainty.
    model = predictor.model("lin")
    row = [[0.4, -0.2, 0.9, 0.1]]
    pred, out = await _auto(
        predictor,
        model.folder.name,
        row,
        seed=9,
        threshold=None,
        metric=None,
        max_samples=64,
        confidence=0.999999999,
    )
    assert out.samples_used.tolist() == [64]
    fixed = (
        await predictor.infer(model.folder.name, row, PredictParams(samples=64, seed=9))
    ).result
    # Float tolerance, not exact: on a GPU the products of different chunk shapes may round
    # differently.
    np.testing.assert_allclose(pred.mean, fixed.mean, rtol=1e-5)
    np.testing.assert_allclose(pred.uncertainty, fixed.uncertainty, rtol=1e-5)
    await predictor.runner.stop()

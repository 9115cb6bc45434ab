"""The MC engine: closed-form moments, independent masks, determinism, chunking, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service import load_model
from service.engines.base import SampleJob, plan_chunks
from service.errors import InactiveDropout
from service.serving.results import ClassificationResult, RegressionResult
from tests.helpers import linear_model_dir

W = np.array([0.5, -1.0, 2.0, 0.25])
X = np.array([1.0, 2.0, -0.5, 4.0])
BIAS = 0.3


@pytest.mark.parametrize("noise", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_linear_layer_matches_closed_form(tmp_path: Path, noise: str, rate: float) -> None:
    """y = w.(m*x)/keep + b with m ~ Bernoulli(keep), or w.(g*x) + b with g ~ N(1, (1-p)/p).

    Both have E[y] = w.x + b and Var[y] = sum_j w_j^2 x_j^2 (1-p)/p, p = keep.
    With T samples the MC mean has standard error sqrt(Var/T), and the sample variance has
    standard error sqrt((m4 - s^4)/T) (m4 the fourth central moment). 5 standard errors: a
    correct engine fails this with probability ~1e-6; a wrong keep rate (e.g. scaling missing)
    shifts the mean by ~10 standard errors and the variance by far more.
    """
    keep = 1.0 - rate
    model = load_model(linear_model_dir(tmp_path / "lin", W, BIAS, rate, noise), device="cpu")
    t = 10_000
    p = model.predict(X[None, :], samples=t, seed=123, return_samples=True)
    assert p.raw_samples is not None
    ys = p.raw_samples[:, 0, 0].astype(np.float64)
    true_mean = float(W @ X + BIAS)
    true_var = float(np.sum(W**2 * X**2) * (1 - keep) / keep)
    assert abs(ys.mean() - true_mean) < 5 * np.sqrt(true_var / t)
    s2 = ys.var()
    m4 = np.mean((ys - ys.mean()) ** 4)
    assert abs(s2 - true_var) < 5 * np.sqrt((m4 - s2**2) / t)
    assert isinstance(p, RegressionResult)
    assert p.epistemic_variance[0, 0] == pytest.approx(s2, rel=1e-6)
    assert p.aleatoric_variance[0, 0] == pytest.approx(1 / 4.0)


def test_identical_rows_get_independent_masks(tmp_path: Path) -> None:
    """N copies of one row: samples differ across rows, and each row's variance estimates the
    same quantity. Row variances over T=4000 samples have relative SE ~ sqrt(2/T) (~2%);
    we require every row within 5 of those SEs of the pooled variance."""
    model = load_model(linear_model_dir(tmp_path / "lin", W, BIAS, 0.5), device="cpu")
    t, n = 4000, 8
    p = model.predict(np.tile(X, (n, 1)), samples=t, seed=7, return_samples=True)
    assert p.raw_samples is not None
    s = p.raw_samples[:, :, 0].astype(np.float64)  # (T, N)
    assert not np.any(np.all(s[:, :1] == s[:, 1:], axis=0)), "rows share masks"
    # Correlation between rows should be ~0 (SE 1/sqrt(T)).
    corr = np.asarray(np.corrcoef(s.T))[np.triu_indices(n, 1)]
    assert np.all(np.abs(corr) < 5 / np.sqrt(t))
    row_var = s.var(axis=0)
    pooled = row_var.mean()
    m4 = np.mean((s - s.mean(axis=0)) ** 4)
    se = np.sqrt((m4 - pooled**2) / t)
    assert np.all(np.abs(row_var - pooled) < 5 * se)


def test_same_seed_is_bitwise_identical_and_different_seeds_differ(
    tiny_regression_dir: Path,
) -> None:
    model = load_model(tiny_regression_dir, device="cpu")
    x = np.random.default_rng(0).normal(size=(5, 3))
    a = model.predict(x, samples=50, seed=42, return_samples=True).raw_samples
    b = model.predict(x, samples=50, seed=42, return_samples=True).raw_samples
    c = model.predict(x, samples=50, seed=43, return_samples=True).raw_samples
    assert a is not None and b is not None and c is not None
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_chunked_equals_unchunked(tiny_regression_dir: Path) -> None:
    """Same masks whatever the chunking; values may differ only by float rounding, because a
    GEMM over a different number of rows may sum in a different order (rtol 1e-5 >> float32 eps)."""
    model = load_model(tiny_regression_dir, device="cpu")
    x = model.prepare(np.random.default_rng(1).normal(size=(7, 3)))
    whole = model.engine.sample_many([SampleJob(x, 64, 9)])[0]
    model.engine.max_rows = 10  # type: ignore[attr-defined]
    chunked = model.engine.sample_many([SampleJob(x, 64, 9)])[0]
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_batched_jobs_equal_jobs_alone(tiny_classifier_dir: Path) -> None:
    model = load_model(tiny_classifier_dir, device="cpu")
    rng = np.random.default_rng(2)
    x1, x2 = model.prepare(rng.normal(size=(3, 4))), model.prepare(rng.normal(size=(5, 4)))
    alone1 = model.engine.sample_many([SampleJob(x1, 20, 1)])[0]
    alone2 = model.engine.sample_many([SampleJob(x2, 33, 2)])[0]
    both = model.engine.sample_many([SampleJob(x1, 20, 1), SampleJob(x2, 33, 2)])
    np.testing.assert_allclose(both[0], alone1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both[1], alone2, rtol=1e-5, atol=1e-6)


def test_rounds_continue_the_same_stream(tiny_regression_dir: Path) -> None:
    model = load_model(tiny_regression_dir, device="cpu")
    x = model.prepare(np.ones((2, 3)))
    whole = model.engine.sample_many([SampleJob(x, 30, 5)])[0]
    first = model.engine.sample_many([SampleJob(x, 10, 5)])[0]
    rest = model.engine.sample_many([SampleJob(x, 20, 5, first_sample=10)])[0]
    np.testing.assert_allclose(np.concatenate([first, rest]), whole, rtol=1e-5, atol=1e-6)


def test_plan_chunks_respects_the_budget_and_covers_every_sample() -> None:
    jobs = [(3, 10), (1, 7), (50, 2)]
    chunks = plan_chunks(jobs, max_rows=8)
    covered: dict[int, int] = {0: 0, 1: 0, 2: 0}
    for chunk in chunks:
        rows = sum((s.t1 - s.t0) * jobs[s.job][0] for s in chunk)
        assert rows <= 8 or (len(chunk) == 1 and chunk[0].t1 - chunk[0].t0 == 1)
        for s in chunk:
            assert s.t0 == covered[s.job]
            covered[s.job] = s.t1
    assert covered == {0: 10, 1: 7, 2: 2}


def test_model_with_inactive_dropout_is_refused(tmp_path: Path) -> None:
    # All weights zero: every pass outputs the bias whatever the mask.
    folder = linear_model_dir(tmp_path / "dead", np.zeros(4), 1.0, 0.5)
    with pytest.raises(InactiveDropout, match="identical"):
        load_model(folder, device="cpu")


def test_convnet_samples_have_the_right_shape(tmp_path: Path) -> None:
    from service.artifacts.data import Dataset
    from service.training.train import TrainConfig, train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 1, 8, 8)).astype(np.float64)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > 127).astype(np.float64)
    cfg = TrainConfig(
        task="classification",
        name="conv",
        arch="convnet",
        conv_channels=[4],
        hidden=8,
        layers=2,
        epochs=1,
        input_scale=1 / 255,
        val_fraction=0.25,
    )
    train(Dataset(x, y), cfg, tmp_path / "conv", progress=False)
    model = load_model(tmp_path / "conv", device="cpu")
    nested = model.predict(x[:3], samples=10, seed=0)
    flat = model.predict(x[:3].reshape(3, -1), samples=10, seed=0)
    assert nested.mean.shape == (3, 2)
    np.testing.assert_array_equal(nested.mean, flat.mean)
    assert isinstance(nested, ClassificationResult) and nested.label.shape == (3,)

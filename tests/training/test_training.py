"""Training the paper's way: tau from weight decay, calibrated variance, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service import load_model
from service.artifacts.data import Dataset, read_csv
from service.artifacts.manifest import read_manifest
from service.cli import main
from service.maths import uncertainty
from service.serving.results import ClassificationResult
from service.training.train import TrainConfig, train, validation_split


def _linear_data(n: int, sigma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 2))
    y = 3.0 * x[:, 0] - 2.0 * x[:, 1] + 1.0 + sigma * rng.normal(size=n)
    return x, y


def test_known_noise_gives_calibrated_predictive_variance(tmp_path: Path) -> None:
    """Data y = a.x + b + N(0, sigma^2), trained with tau = 1/sigma^2.

    The predictive variance is 1/tau + epistemic >= sigma^2 by construction; a well-fitted
    model (no input dropout: on a linear signal it would add w^2 x^2 p/(1-p) by design)
    model adds little epistemic variance in-distribution, so the average stays below 3 sigma^2.
    The paper's test log-likelihood must beat the constant predictor N(mean_y, var_y).
    """
    sigma = 0.5
    x, y = _linear_data(1200, sigma, 0)
    xt, yt = _linear_data(400, sigma, 1)
    cfg = TrainConfig(
        task="regression",
        name="lin",
        hidden=32,
        layers=1,
        dropout=0.05,
        input_dropout=0.0,
        epochs=40,
        batch_size=32,
        tau=1 / sigma**2,
        val_fraction=0.0,
    )
    train(Dataset(x, y), cfg, tmp_path / "lin", progress=False)
    model = load_model(tmp_path / "lin", device="cpu")
    p = model.predict(xt, samples=500, seed=0, return_samples=True)
    assert p.raw_samples is not None and model.manifest.tau is not None
    mean_var = float(p.variance.mean())
    assert sigma**2 <= mean_var < 3 * sigma**2
    from service.maths import uncertainty

    ll = uncertainty.mc_log_likelihood(p.raw_samples, yt, model.manifest.tau)
    const_ll = float(
        np.mean(-0.5 * np.log(2 * np.pi * y.var()) - (yt - y.mean()) ** 2 / (2 * y.var()))
    )
    assert ll > const_ll + 0.5
    # The weight decay stored is the paper's lambda for this tau.
    tr = model.manifest.training
    assert math.isclose(tr["weight_decay"], 0.95 * 1e-4 / (2 * 1200 * 4.0))


def test_training_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    x, y = _linear_data(200, 0.3, 2)
    cfg = TrainConfig(task="regression", name="d", hidden=8, layers=1, epochs=3, tau=10.0)
    train(Dataset(x, y), cfg, tmp_path / "a", progress=False)
    train(Dataset(x, y), cfg, tmp_path / "b", progress=False)
    assert (
        read_manifest(tmp_path / "a").weights.sha256 == read_manifest(tmp_path / "b").weights.sha256
    )


def test_tau_is_fitted_on_validation_when_not_given(tmp_path: Path) -> None:
    """Without --tau, tau maximises the paper's MC log-likelihood on the validation rows.

    1/tau is not sigma^2 here: input dropout on a linear signal spreads the MC samples
    (epistemic variance w^2 x^2 p/(1-p), about 4x sigma^2 for this model) and the ML noise only
    fills what the spread leaves. What the fit promises is the maximum, so on fresh MC samples
    of the same rows (T = 2,000: the maximiser moves far less than a factor 2 between draws)
    tau must beat tau x 2 and tau / 2.
    """
    x, y = _linear_data(1200, 0.5, 3)
    cfg = TrainConfig(task="regression", name="f", hidden=32, layers=1, epochs=30, val_fraction=0.2)
    res = train(Dataset(x, y), cfg, tmp_path / "f", progress=False)
    assert res.manifest.training["tau_source"] == "validation_ml"
    tau = res.manifest.tau
    assert tau is not None and tau > 0
    _, va = validation_split(len(x), cfg.val_fraction, cfg.seed)
    pred = load_model(tmp_path / "f").predict(x[va], samples=2000, seed=7, return_samples=True)
    assert pred.raw_samples is not None
    ys = pred.raw_samples.astype(np.float64)
    ll = {
        t: uncertainty.mc_log_likelihood(ys, y[va].reshape(-1, 1), t)
        for t in (tau / 2, tau, tau * 2)
    }
    assert ll[tau] > ll[tau / 2] and ll[tau] > ll[tau * 2], ll


def test_cli_train_on_csv_with_string_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["f1,f2,kind"]
    for _ in range(120):
        a, b = rng.normal(size=2)
        rows.append(f"{a},{b},{'cat' if a + b > 0 else 'dog'}")
    csv = tmp_path / "d.csv"
    csv.write_text("\n".join(rows) + "\n")
    ds = read_csv(csv, "kind")
    assert ds.class_labels == ["cat", "dog"] and ds.feature_names == ["f1", "f2"]
    out = tmp_path / "pets"
    code = main(
        [
            "train",
            str(csv),
            "--task",
            "classification",
            "--target",
            "kind",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--hidden",
            "8",
            "--quiet",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["class_labels"] == ["cat", "dog"]
    assert manifest["tau"] is None and "weight_decay" in manifest["training"]
    p = load_model(out, device="cpu").predict([[1.0, 1.0]], samples=10, seed=0)
    assert isinstance(p, ClassificationResult) and p.probabilities.shape == (1, 2)


def _noisy_blobs(n: int, seed: int) -> Dataset:
    """Two overlapping classes with a quarter of the labels flipped: easy to over-fit."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 5)) + 0.8 * y[:, None]
    flip = rng.random(n) < 0.25
    return Dataset(x, np.where(flip, 1 - y, y).astype(np.float64))


def test_early_stopping_keeps_the_best_validation_epoch(tmp_path: Path) -> None:
    """With --early-stopping the run stops PATIENCE epochs after the lowest MC validation NLL,
    records every epoch's figures, and keeps that epoch's weights: the same recipe trained for
    exactly best_epoch epochs without early stopping gives the same weights."""
    ds = _noisy_blobs(400, 4)
    kw: dict[str, Any] = dict(
        task="classification", hidden=128, layers=2, dropout=0.05, epochs=60, batch_size=16,
        lr=3e-3, val_fraction=0.25,
    )  # fmt: skip
    res = train(ds, TrainConfig(name="es", early_stopping=3, **kw), tmp_path / "es", progress=False)
    tr = res.manifest.training
    hist = tr["history"]
    nlls = [h["mc_nll"] for h in hist]
    best = tr["best_epoch"]
    assert [h["epoch"] for h in hist] == list(range(1, len(hist) + 1))
    assert nlls[best - 1] == min(nlls)
    # It stopped early (this data over-fits well within 60 epochs), 3 epochs after the best.
    assert len(hist) == best + 3 < 60
    assert {"standard_nll", "mc_accuracy", "standard_accuracy", "train_loss"} <= set(hist[0])
    kw["epochs"] = best
    train(ds, TrainConfig(name="es", **kw), tmp_path / "fixed", progress=False)
    assert res.manifest.weights.sha256 == read_manifest(tmp_path / "fixed").weights.sha256


def test_early_stopping_needs_validation_rows_of_a_classifier() -> None:
    ds = _noisy_blobs(50, 5)
    for cfg in (
        TrainConfig(task="classification", epochs=1, val_fraction=0.0, early_stopping=2),
        TrainConfig(task="regression", epochs=1, early_stopping=2),
        TrainConfig(task="classification", epochs=1, early_stopping=0),
    ):
        with pytest.raises(ValueError, match="early"):
            train(ds, cfg, None, progress=False)

"""Scoring a model on labelled held-out data: the shared first step of calibrate and evaluate.

Runs MC dropout (T passes, fixed seed) and standard dropout (one deterministic pass) over a
dataset and returns, per row, each uncertainty measure and the loss it should rank.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from service.artifacts.data import Dataset
from service.artifacts.manifest import MANIFEST_NAME, sha256_file
from service.maths import uncertainty
from service.serving.model import MCDropoutModel
from service.serving.results import ClassificationResult, RegressionResult

FloatArray = NDArray[np.float64]

# Uncertainty of standard dropout comes from its single softmax: entropy and 1 - max probability.
STANDARD_CLASSIFICATION_METRICS = ("predictive_entropy", "least_confidence")


@dataclass
class Scored:
    """One way of predicting (MC or standard dropout) on labelled rows."""

    method: str  # "mc_dropout" or "standard_dropout"
    task: str
    loss: FloatArray  # (N,): 0/1 error (classification) or squared error (regression)
    uncertainty: dict[str, FloatArray] = field(default_factory=dict)  # metric -> (N,)
    probabilities: FloatArray | None = None  # (N, K)
    mean: FloatArray | None = None  # (N, D) regression
    samples: FloatArray | None = None  # (T, N, D) regression, target units


def resolve_model_dir(spec: str | Path, models_dir: str | Path = "models") -> Path:
    """MODEL may be a model folder or the name of one under models/."""
    path = Path(spec)
    if (path / MANIFEST_NAME).is_file():
        return path
    named = Path(models_dir) / str(spec)
    if (named / MANIFEST_NAME).is_file():
        return named
    raise FileNotFoundError(
        f"model '{spec}': neither a model folder nor a name under {models_dir}/"
    )


def data_fingerprint(path: str | Path) -> dict[str, str]:
    """Name and SHA-256 of a data file (and of the labels file of an idx pair)."""
    p = Path(path)
    out = {"data": p.name, "sha256": sha256_file(p)}
    if "images-idx3" in p.name:
        labels = Path(str(p).replace("images-idx3", "labels-idx1"))
        out["labels_sha256"] = sha256_file(labels)
    return out


def _targets(ds: Dataset, model: MCDropoutModel) -> FloatArray:
    y = np.asarray(ds.y, np.float64)
    if model.task == "classification":
        labels = y.reshape(-1)
        k = len(model.manifest.class_labels or []) or model.manifest.architecture.output_dim
        if np.any(labels != np.round(labels)) or labels.min() < 0 or labels.max() >= k:
            raise ValueError(f"labels must be integers in [0, {k - 1}] for this classifier")
        return labels
    d = model.manifest.architecture.output_dim
    if y.size != len(y) * d:
        raise ValueError(f"targets: expected {d} value(s) per row, got shape {list(y.shape)}")
    return y.reshape(len(y), d)


def score_mc(model: MCDropoutModel, ds: Dataset, samples: int, seed: int) -> Scored:
    """MC dropout with T = samples passes; every uncertainty measure the task offers."""
    y = _targets(ds, model)
    pred = model.predict(ds.x, samples=samples, seed=seed, return_samples=True)
    if model.task == "classification":
        assert isinstance(pred, ClassificationResult)
        unc = {
            m: np.asarray(getattr(pred, m), np.float64) for m in uncertainty.CLASSIFICATION_METRICS
        }
        wrong = (pred.label != y.astype(np.int64)).astype(np.float64)
        return Scored("mc_dropout", model.task, wrong, unc, probabilities=pred.probabilities)
    assert isinstance(pred, RegressionResult) and pred.raw_samples is not None
    # Several outputs: a row is as uncertain as its most uncertain output (as in summarize).
    var_epi = pred.epistemic_variance
    assert var_epi is not None and pred.variance is not None
    unc = {
        "std": np.sqrt(pred.variance).max(axis=1),
        "variance": pred.variance.max(axis=1),
        "epistemic_std": np.sqrt(var_epi).max(axis=1),
    }
    se = np.mean((pred.mean - y) ** 2, axis=1)
    samples_arr = np.asarray(pred.raw_samples, np.float64)
    return Scored("mc_dropout", model.task, se, unc, mean=pred.mean, samples=samples_arr)


def score_standard(model: MCDropoutModel, ds: Dataset) -> Scored:
    """Standard dropout: weights scaled by keep_prob, one deterministic pass."""
    y = _targets(ds, model)
    out = model.predict_standard(ds.x)
    if model.task == "classification":
        unc = {
            "predictive_entropy": -np.sum(out * np.log(np.clip(out, 1e-12, 1.0)), axis=1),
            "least_confidence": 1.0 - out.max(axis=1),
        }
        wrong = (out.argmax(axis=1) != y.astype(np.int64)).astype(np.float64)
        return Scored("standard_dropout", model.task, wrong, unc, probabilities=out)
    se = np.mean((out - y) ** 2, axis=1)
    # One pass gives no per-row spread; the predictive variance is the constant 1/tau.
    unc = {"constant": np.zeros(len(se))}
    return Scored("standard_dropout", model.task, se, unc, mean=out, samples=out[None])


def array_sha256(x: NDArray[np.floating], y: NDArray[np.floating]) -> str:
    """SHA-256 of a held-out set's arrays (float64, little-endian, row-major)."""
    h = hashlib.sha256(np.ascontiguousarray(x, "<f8").tobytes())
    h.update(np.ascontiguousarray(y, "<f8").tobytes())
    return h.hexdigest()


def concat_datasets(parts: list[Dataset]) -> Dataset:
    x = np.concatenate([p.x.reshape(len(p.x), -1) for p in parts])
    y = np.concatenate([np.asarray(p.y, np.float64).reshape(len(p.y), -1) for p in parts])
    return Dataset(x, y[:, 0] if y.shape[1] == 1 else y)


def referral_heldout(model_name: str, database_url: str | None) -> Dataset:
    """The referrals people resolved for this model, as labelled held-out rows."""
    from service.config import Settings
    from service.referrals.export import resolved_dataset

    url = database_url or Settings().database_url
    x, y = resolved_dataset(url, model_name)
    return Dataset(x, y)


def report_on_referrals(model: MCDropoutModel, ds: Dataset, samples: int, seed: int) -> None:
    """Print how the model does on the items people resolved (they are the hard ones)."""
    scored = score_mc(model, ds, samples, seed)
    n = len(scored.loss)
    if model.task == "classification":
        acc = 1.0 - float(np.mean(scored.loss))
        se = float(np.sqrt(acc * (1 - acc) / n))
        print(f"resolved referrals: {n} rows; model accuracy on them {acc:.3f} ± {se:.3f} (SE)")
    else:
        print(
            f"resolved referrals: {n} rows; model RMSE on them {np.sqrt(np.mean(scored.loss)):.4g}"
        )

"""A trained network on its held-out rows: MC dropout figures, tau (fitted when not given) and
the placeholder abstain threshold that `mcdrop calibrate` later replaces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from service.engines.base import SampleJob
from service.engines.runtime import EngineRuntime
from service.engines.torch_engine import TorchEngine
from service.maths import uncertainty
from service.training.rows import Rows

VALIDATION_SAMPLES = 100  # MC passes per held-out row, with the training seed


@dataclass
class ValidationFigures:
    metrics: dict[str, float]
    tau: float | None  # regression only
    metric: str  # the uncertainty measure the threshold applies to
    threshold: float


def validation_figures(
    net: nn.Sequential,
    input_shape: list[int],
    rows: Rows,
    eval_idx: NDArray[np.intp],
    tau: float | None,
    seed: int,
) -> ValidationFigures:
    """tau: the given model precision, or None to fit it here (regression)."""
    engine = TorchEngine(net, input_shape, EngineRuntime(device="cpu"))
    raw = engine.sample_many([SampleJob(rows.x[eval_idx], VALIDATION_SAMPLES, seed)])[0]
    metrics: dict[str, float]
    if rows.y is not None:
        assert rows.y_mean is not None and rows.y_std is not None
        ys = raw.astype(np.float64) * rows.y_std + rows.y_mean
        y_eval = rows.y[eval_idx]
        tau = tau if tau is not None else _fit_tau(ys, y_eval)
        mom = uncertainty.regression_moments(ys, tau)
        metrics = {
            "rmse": uncertainty.rmse(mom.mean, y_eval),
            "log_likelihood": uncertainty.mc_log_likelihood(ys, y_eval, tau),
        }
        metric, unc = "std", mom.std.max(axis=1)
    else:
        assert rows.labels is not None
        labels = rows.labels[eval_idx]
        cm = uncertainty.classification_measures(uncertainty.softmax(raw, axis=2))
        metrics = {
            "accuracy": uncertainty.accuracy(cm.probabilities, labels),
            "nll": uncertainty.nll(cm.probabilities, labels),
            "brier": uncertainty.brier(cm.probabilities, labels),
        }
        tau, metric, unc = None, "predictive_entropy", cm.predictive_entropy
    metrics["n_eval"] = float(len(eval_idx))
    # Placeholder until `mcdrop calibrate`: refer the 10% most uncertain held-out rows.
    return ValidationFigures(metrics, tau, metric, float(np.quantile(unc, 0.9)))


def _fit_tau(ys: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """tau maximising the paper's MC log-likelihood on held-out rows (see uncertainty.fit_tau)."""
    return uncertainty.fit_tau(ys, y)


def epoch_point(
    net: nn.Sequential,
    input_shape: list[int],
    x: NDArray[np.float32],
    labels: NDArray[np.int64],
    samples: int,
    seed: int,
) -> dict[str, float]:
    """Validation NLL and accuracy after an epoch: MC dropout (`samples` masks) and standard."""
    net.eval()
    engine = TorchEngine(net, input_shape, EngineRuntime(device="cpu"))
    raw = engine.sample_many([SampleJob(x, samples, seed)])[0]
    mc = uncertainty.softmax(raw, axis=2).mean(axis=0)
    with torch.no_grad():
        std = uncertainty.softmax(net(torch.from_numpy(x)).numpy(), axis=1)
    return {
        "mc_nll": uncertainty.nll(mc, labels),
        "standard_nll": uncertainty.nll(std, labels),
        "mc_accuracy": uncertainty.accuracy(mc, labels),
        "standard_accuracy": uncertainty.accuracy(std, labels),
    }

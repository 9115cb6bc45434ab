"""What the UCI runs share: standardising a split by its training rows, scoring a stacked model
on held-out rows in the target's units, and the mean and standard error over splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from service.maths import uncertainty
from service.training.stacked import StackedMLP, mc_samples


@dataclass(frozen=True)
class Standardised:
    x: NDArray[np.float32]
    y: NDArray[np.float32]
    x_mean: NDArray[np.float64]
    x_std: NDArray[np.float64]
    y_mean: float
    y_std: float

    def inputs(self, x: NDArray[np.float64]) -> torch.Tensor:
        return torch.from_numpy(((x - self.x_mean) / self.x_std).astype(np.float32))


def standardise(x: NDArray[np.float64], y: NDArray[np.float64]) -> Standardised:
    """Training statistics; a constant column keeps std 1 (Gal: std_X_train[std == 0] = 1)."""
    x_mean, x_std = x.mean(0), x.std(0)
    x_std = np.where(x_std == 0, 1.0, x_std)
    y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
    return Standardised(
        x=((x - x_mean) / x_std).astype(np.float32),
        y=((y - y_mean) / y_std).astype(np.float32),
        x_mean=x_mean,
        x_std=x_std,
        y_mean=y_mean,
        y_std=y_std,
    )


def score(
    m: StackedMLP,
    model: int,
    x: torch.Tensor,
    y: NDArray[np.float64],
    norm: Standardised,
    tau: float,
    samples: int,
    gen: torch.Generator,
) -> tuple[float, float]:
    """(RMSE of the MC mean, test log-likelihood), both in the target's original units."""
    acc = uncertainty.StreamingRegressionScore(y, tau)
    for chunk in mc_samples(m, model, x, samples, gen):
        acc.update(chunk.double().numpy() * norm.y_std + norm.y_mean)
    return acc.rmse(), acc.log_likelihood()


def summarise(splits: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Mean and standard error over splits; SE = std (ddof 0) / sqrt(n), as in Gal's logs."""
    out: dict[str, float] = {}
    for metric in ("rmse", "ll"):
        v = np.array([s[f"{metric}_{key}"] for s in splits], dtype=np.float64)
        out[f"{metric}_mean"] = float(v.mean())
        out[f"{metric}_se"] = float(v.std() / np.sqrt(len(v)))
    return out

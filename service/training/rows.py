"""A dataset's rows as training sees them: inputs and targets normalised by the training rows'
statistics, and the labels or target columns the network's output size follows from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.artifacts.data import Dataset


@dataclass
class Rows:
    """Every row normalised (training and validation alike); statistics from the training rows."""

    x: NDArray[np.float32]  # inputs, normalised
    x_mean: NDArray[np.float64]
    x_std: NDArray[np.float64]
    out_dim: int
    # Regression: targets (N, D) in their units, normalised, and their statistics.
    y: NDArray[np.float64] | None = None
    y_normalised: NDArray[np.float32] | None = None
    y_mean: NDArray[np.float64] | None = None
    y_std: NDArray[np.float64] | None = None
    # Classification: integer labels and every class's name.
    labels: NDArray[np.int64] | None = None
    class_labels: list[str] | None = None


def standardise(a: NDArray[np.float64], axis: int = 0) -> tuple[NDArray[np.float64], ...]:
    mean = a.mean(axis=axis)
    std = a.std(axis=axis)
    std = np.where(std > 0, std, 1.0)  # a constant column is left as is, not divided by zero
    return mean, std


def prepare_rows(
    ds: Dataset, x_all: NDArray[np.float64], tr: NDArray[np.intp], task: str, images: bool
) -> Rows:
    # Images get one global mean/std (per-pixel statistics would blow up on constant borders).
    if images:
        x_mean = np.array([x_all[tr].mean()])
        x_std = np.array([x_all[tr].std() or 1.0])
        xn = ((x_all - x_mean[0]) / x_std[0]).astype(np.float32)
    else:
        x_mean, x_std = standardise(x_all[tr])
        xn = ((x_all - x_mean) / x_std).astype(np.float32)
    y_raw = np.asarray(ds.y, np.float64)
    if task == "regression":
        y2 = y_raw.reshape(len(y_raw), -1)
        y_mean, y_std = standardise(y2[tr])
        yn = ((y2 - y_mean) / y_std).astype(np.float32)
        return Rows(xn, x_mean, x_std, y2.shape[1], y2, yn, y_mean, y_std)
    labels = y_raw.astype(np.int64).reshape(-1)
    out_dim = int(labels.max()) + 1
    class_labels = ds.class_labels or [str(i) for i in range(out_dim)]
    return Rows(
        xn,
        x_mean,
        x_std,
        max(out_dim, len(class_labels)),
        labels=labels,
        class_labels=class_labels,
    )

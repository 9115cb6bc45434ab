"""What a prediction answers: one typed result per task, each with exactly that task's fields.

Arrays are row-aligned: row i of every per-row array answers input row i. Regression numbers are
in the target's original units. `outputs()` lists a result's per-row arrays by name, once, for
the code that treats them alike (overflow checks, referral breakdowns, V2 tensors, merging the
rounds of `samples: "auto"`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class AdaptiveStats:
    """Per-row extras of `samples: "auto"`, where each row stops at its own T."""

    max_samples: int
    confidence: float
    samples_used: NDArray[np.int64]  # (N,)
    mean_se: NDArray[np.float64]  # (N, D): MC standard error of the mean
    uncertainty_se: NDArray[np.float64]  # (N,): MC standard error of the uncertainty value
    decision_settled: NDArray[np.bool_]  # (N,): stopped early because the interval cleared

    def outputs(self) -> dict[str, NDArray[np.generic]]:
        return {
            "samples_used": self.samples_used,
            "mean_se": self.mean_se,
            "uncertainty_se": self.uncertainty_se,
            "decision_settled": self.decision_settled,
        }


@dataclass(frozen=True, kw_only=True)
class _Result:
    """The fields every task's result has."""

    samples: int  # T (samples "auto": the largest T any row used)
    seed: int
    metric: str
    threshold: float
    mean: NDArray[np.float64]  # (N, D); classification: mean probabilities
    variance: NDArray[np.float64]  # (N, D); total predictive variance / per-class variance
    uncertainty: NDArray[np.float64]  # (N,) the value compared with the threshold
    abstain: NDArray[np.bool_]  # (N,)
    raw_samples: NDArray[np.float32] | None = None  # (T, N, D), only when asked for
    referral_ids: list[str | None] | None = None  # per row, set when abstained rows were referred
    # Per row: why it abstains whatever the threshold (e.g. its outputs overflowed), else None.
    reason: list[str | None] | None = None
    adaptive: AdaptiveStats | None = None  # only with samples "auto"

    def _common(self) -> dict[str, NDArray[np.generic]]:
        return {
            "mean": self.mean,
            "variance": self.variance,
            "uncertainty": self.uncertainty,
            "abstain": self.abstain,
        }

    @property
    def rows(self) -> int:
        return int(self.abstain.shape[0])

    @property
    def samples_drawn(self) -> int:
        """Stochastic passes drawn over all rows (adaptive rows each stop at their own T)."""
        if self.adaptive is not None:
            return int(self.adaptive.samples_used.sum())
        return self.samples * self.rows


@dataclass(frozen=True, kw_only=True)
class RegressionResult(_Result):
    """MC dropout regression for N rows, in the target's original units."""

    task: ClassVar[Task] = "regression"
    std: NDArray[np.float64]  # (N, D) square root of the total variance
    epistemic_variance: NDArray[np.float64]  # (N, D) variance of the T sampled outputs
    aleatoric_variance: NDArray[np.float64]  # (N, D) observation noise 1/τ

    def outputs(self) -> dict[str, NDArray[np.generic]]:
        """Every per-row array by name, in the order the API lists them."""
        return {
            **self._common(),
            "std": self.std,
            "epistemic_variance": self.epistemic_variance,
            "aleatoric_variance": self.aleatoric_variance,
        }


@dataclass(frozen=True, kw_only=True)
class ClassificationResult(_Result):
    """MC dropout classification for N rows; `mean` is the mean softmax, as `probabilities`."""

    task: ClassVar[Task] = "classification"
    probabilities: NDArray[np.float64]  # (N, K)
    label: NDArray[np.int64]  # (N,) index of the most probable class
    predictive_entropy: NDArray[np.float64]  # (N,)
    mutual_information: NDArray[np.float64]  # (N,)
    variation_ratio: NDArray[np.float64]  # (N,)

    def outputs(self) -> dict[str, NDArray[np.generic]]:
        """Every per-row array by name, in the order the API lists them."""
        return {
            **self._common(),
            "probabilities": self.probabilities,
            "label": self.label,
            "predictive_entropy": self.predictive_entropy,
            "mutual_information": self.mutual_information,
            "variation_ratio": self.variation_ratio,
        }


# The library's name for either result: `load_model(...).predict(...)` returns one.
Prediction: TypeAlias = RegressionResult | ClassificationResult


__all__ = [
    "AdaptiveStats",
    "ClassificationResult",
    "Prediction",
    "RegressionResult",
    "Task",
]

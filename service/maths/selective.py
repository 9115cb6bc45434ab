"""Selective prediction: how risk falls as the most uncertain items are referred.

Pure numpy. Items are retained in order of increasing uncertainty; the risk-coverage curve gives,
for every k, the mean loss of the k most certain items, and its area (AURC, Geifman et al., 2019)
summarises how well an uncertainty measure ranks the model's mistakes (lower is better).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]

REFERRAL_RATES = (0.0, 0.05, 0.10, 0.20, 0.30)


@dataclass(frozen=True)
class RiskCoverage:
    coverage: FloatArray  # (N,): k / N for k = 1..N
    risk: FloatArray  # (N,): mean loss of the k most certain items


def risk_coverage(uncertainty: NDArray[np.floating], loss: NDArray[np.floating]) -> RiskCoverage:
    """Mean retained loss for every coverage k/N, items taken from the least uncertain.

    Ties are broken at random *in expectation*: inside a group of equal uncertainty each item
    contributes the group's mean loss. Without this, a measure with many ties (variation ratio,
    or a constant) would be scored by the data's order rather than by the measure.
    """
    u = np.asarray(uncertainty, np.float64)
    l_ = np.asarray(loss, np.float64)
    if u.shape != l_.shape or u.ndim != 1 or len(u) == 0:
        raise ValueError("uncertainty and loss must be non-empty 1-D arrays of the same length")
    # A non-finite uncertainty is always referred, so it sorts last.
    order = np.argsort(np.where(np.isfinite(u), u, np.inf), kind="stable")
    us, ls = u[order], l_[order]
    starts = np.flatnonzero(np.r_[True, us[1:] != us[:-1]])
    sums = np.add.reduceat(ls, starts)
    sizes = np.diff(np.r_[starts, len(us)])
    smoothed = np.repeat(sums / sizes, sizes)
    k = np.arange(1, len(us) + 1, dtype=np.float64)
    return RiskCoverage(k / len(us), np.cumsum(smoothed) / k)


def aurc(
    uncertainty: NDArray[np.floating], loss: NDArray[np.floating], root: bool = False
) -> float:
    """Area under the risk-coverage curve: (1/N) sum_k risk(k). root=True: of sqrt(risk) (RMSE)."""
    rc = risk_coverage(uncertainty, loss)
    risk = np.sqrt(rc.risk) if root else rc.risk
    return float(np.mean(risk))


def retained_risk(
    uncertainty: NDArray[np.floating],
    loss: NDArray[np.floating],
    referral_rates: tuple[float, ...] = REFERRAL_RATES,
) -> list[tuple[float, int, float]]:
    """(referral rate, items retained, mean retained loss) after referring the most uncertain."""
    rc = risk_coverage(uncertainty, loss)
    n = len(rc.risk)
    out = []
    for r in referral_rates:
        keep = max(1, round((1.0 - r) * n))
        out.append((r, keep, float(rc.risk[keep - 1])))
    return out

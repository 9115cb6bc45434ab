"""How well an uncertainty measure tells out-of-distribution rows from in-distribution ones.

Pure numpy/scipy. The OOD rows are the positives and a larger uncertainty should rank them
first: AUROC is the probability that a random OOD row scores above a random in-distribution row
(ties count one half; 0.5 is chance), AUPR the average precision with OOD as the positive class
(chance is the OOD share of the pooled rows).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import stats

FloatArray = NDArray[np.float64]


def _pooled(
    u_in: NDArray[np.floating], u_ood: NDArray[np.floating]
) -> tuple[FloatArray, NDArray[np.bool_]]:
    # A non-finite score (an overflowed row) abstains whatever the threshold: rank it highest.
    u = np.concatenate([u_in, u_ood]).astype(np.float64)
    u = np.where(np.isnan(u), np.inf, u)
    if len(u_in) == 0 or len(u_ood) == 0:
        raise ValueError("need at least one in-distribution and one OOD score")
    return u, np.r_[np.zeros(len(u_in), bool), np.ones(len(u_ood), bool)]


def auroc(u_in: NDArray[np.floating], u_ood: NDArray[np.floating]) -> float:
    """Mann-Whitney form of the area under the ROC curve (mid-ranks for ties)."""
    u, pos = _pooled(u_in, u_ood)
    ranks = stats.rankdata(np.where(np.isinf(u), np.finfo(np.float64).max, u))
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def aupr(u_in: NDArray[np.floating], u_ood: NDArray[np.floating]) -> float:
    """Average precision with OOD positive: mean of the precision at each OOD row's rank.

    Tied scores are taken as one step (the precision of the whole tie group), so the figure
    does not depend on the order of equal scores.
    """
    u, pos = _pooled(u_in, u_ood)
    order = np.argsort(-u, kind="stable")
    u, pos = u[order], pos[order]
    tp = np.cumsum(pos)
    # Last index of each group of equal scores: precision is read at group ends.
    ends = np.r_[np.flatnonzero(u[1:] != u[:-1]), len(u) - 1]
    tp_end = tp[ends]
    gained = np.diff(np.r_[0, tp_end])
    precision = tp_end / (ends + 1)
    return float(np.sum(gained * precision) / pos.sum())


def separation(u_in: NDArray[np.floating], u_ood: NDArray[np.floating]) -> dict[str, float]:
    return {"auroc": auroc(u_in, u_ood), "aupr": aupr(u_in, u_ood)}


def referral_rate(u: NDArray[np.floating], threshold: float) -> float:
    """Fraction of rows over the threshold (a NaN score abstains too)."""
    x = np.asarray(u, np.float64)
    return float(np.mean(~(x <= threshold)))

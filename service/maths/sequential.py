"""Adaptive T: stop drawing MC samples for a row once its abstain decision is settled.

Pure maths, no torch, no I/O. Samples come in rounds whose cumulative totals double (16, 32,
64, ... up to max_samples). After each round but the last, every open row gets a confidence
interval for its uncertainty value from the MC standard error; a row whose interval lies wholly
above the threshold (abstain) or wholly below it (keep) stops, the others keep sampling. At
max_samples every row stops, settled or not.

Intervals (T samples so far, level 1 - a per look):
- variance, std, epistemic_std (regression): chi-square interval for the MC variance σ² of each
  output, (T-1)S²/χ²_{T-1}, mapped through the monotone maps σ² + 1/τ, √(σ² + 1/τ), √σ².
- predictive_entropy, mutual_information: the delta method. Both are smooth functions of sample
  means, so their MC error is that of the mean of one linearised value per sample:
  H(p̄) linearises to z_t = -Σ_k p_tk log p̄_k, and MI = H(p̄) - mean_t H(p_t) to z_t - H(p_t).
  SE = sd(z)/√T, the sd taken with one pseudo-sample at the uniform distribution (see below);
  the interval uses Student's t with T-1 degrees of freedom (small T).
- variation_ratio: 1 - f/T with f the votes of the modal class; a Clopper-Pearson (exact
  binomial) interval for the modal share f/T.

Multiple looks. A row is tested at up to L = len(schedule) - 1 looks, and each look is a chance
to stop on a wrong side. We spend the error budget 1 - confidence evenly across looks
(Bonferroni): a = (1 - confidence) / L per look. With at most log2(max/16) + 1 looks this costs
little width (z goes from 2.58 to about 3.0 for L = 4 at 99%), and it bounds the chance that any
look of a row stops on the wrong side by 1 - confidence without assumptions about how looks
correlate. With D outputs (regression) the budget is also split over outputs, since the row's
uncertainty is the largest of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

FloatArray = NDArray[np.float64]

DEFAULT_CONFIDENCE = 0.99
# The first look comes after 16 samples, not 8: the delta method only sees the spread of the
# samples drawn, and a mode holding a quarter of the mass is missed by 8 draws 10% of the time
# ((3/4)^8) but by 16 draws 1% of the time (the simulation's figures: docs/adaptive-sampling.md).
FIRST_ROUND = 16
_EPS = 1e-12


def schedule(max_samples: int, first: int = FIRST_ROUND) -> list[int]:
    """Cumulative sample totals after each round: first, 2·first, 4·first, ..., max_samples."""
    if max_samples < 2 or first < 2:
        raise ValueError("max_samples and first must be at least 2")
    totals = [min(first, max_samples)]
    while totals[-1] < max_samples:
        totals.append(min(2 * totals[-1], max_samples))
    return totals


def look_alpha(confidence: float, looks: int) -> float:
    """Error budget of one look: (1 - confidence) spread evenly over the looks (Bonferroni)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return (1.0 - confidence) / max(looks, 1)


@dataclass(frozen=True)
class Interval:
    """Per row: the uncertainty estimate, its MC standard error and a confidence interval."""

    value: FloatArray  # (N,)
    se: FloatArray  # (N,)
    lower: FloatArray  # (N,)
    upper: FloatArray  # (N,)

    def settled(self, threshold: float) -> NDArray[np.bool_]:
        """Rows whose interval lies wholly on one side. Abstain is `value > threshold`, so an
        interval touching the threshold is not settled: a row exactly on it runs to the cap."""
        out: NDArray[np.bool_] = (self.lower > threshold) | (self.upper < threshold)
        return out


def mean_se(samples: NDArray[np.floating]) -> FloatArray:
    """MC standard error of the mean of (T, N, D) samples: sd / √T, per row and output."""
    s = np.asarray(samples, np.float64)
    t = s.shape[0]
    out: FloatArray = s.std(axis=0, ddof=1) / np.sqrt(t) if t > 1 else np.zeros(s.shape[1:])
    return out


# ---------------------------------------------------------------------------- regression


def regression_interval(
    samples: NDArray[np.floating], tau: float, metric: str, alpha: float
) -> Interval:
    """Chi-square interval for variance / std / epistemic_std of (T, N, D) target-unit samples.

    The point value matches service.maths.uncertainty (MC variance with 1/T); the interval is for
    the
    population variance σ² from S² (1/(T-1)). The row's value is the largest over outputs.
    """
    s = np.asarray(samples, np.float64)
    t, _, d = s.shape
    a = alpha / d
    s2 = s.var(axis=0, ddof=1)  # (N, D)
    lo_s2 = (t - 1) * s2 / stats.chi2.ppf(1.0 - a / 2, t - 1)
    hi_s2 = (t - 1) * s2 / stats.chi2.ppf(a / 2, t - 1)
    point = s.var(axis=0)
    se_s2 = s2 * np.sqrt(2.0 / (t - 1))  # SE of S² for normal samples
    noise = 1.0 / tau
    if metric == "variance":
        val, lo, hi, se = point + noise, lo_s2 + noise, hi_s2 + noise, se_s2
    elif metric == "std":
        val = np.sqrt(point + noise)
        lo, hi = np.sqrt(lo_s2 + noise), np.sqrt(hi_s2 + noise)
        se = se_s2 / (2.0 * np.sqrt(s2 + noise))  # delta method: d√v/dv = 1/(2√v)
    elif metric == "epistemic_std":
        val, lo, hi = np.sqrt(point), np.sqrt(lo_s2), np.sqrt(hi_s2)
        se = se_s2 / (2.0 * np.sqrt(np.maximum(s2, _EPS)))
    else:
        raise ValueError(f"unknown regression metric '{metric}'")
    worst = val.argmax(axis=1)
    rows = np.arange(s.shape[1])
    return Interval(val.max(axis=1), se[rows, worst], lo.max(axis=1), hi.max(axis=1))


# ------------------------------------------------------------------------ classification


def classification_interval(probs: NDArray[np.floating], metric: str, alpha: float) -> Interval:
    """Delta-method (entropy, MI) or exact binomial (variation ratio) interval, (T, N, K) in."""
    p = np.asarray(probs, np.float64)
    t, _, k = p.shape
    if metric == "variation_ratio":
        return _variation_ratio_interval(p, alpha)
    mean = p.mean(axis=0)  # (N, K)
    log_mean = np.log(np.clip(mean, _EPS, 1.0))
    entropy = np.maximum(-np.sum(mean * log_mean, axis=1), 0.0)
    z = -np.einsum("tnk,nk->tn", p, log_mean)  # linearised H(p̄), one value per sample
    if metric == "predictive_entropy":
        val = entropy
    elif metric == "mutual_information":
        h_t = -np.sum(p * np.log(np.clip(p, _EPS, 1.0)), axis=2)  # (T, N)
        z = z - h_t
        val = np.maximum(entropy - h_t.mean(axis=0), 0.0)
    else:
        raise ValueError(f"unknown classification metric '{metric}'")
    spread = z.std(axis=0, ddof=1)
    se = spread / np.sqrt(t)
    half = stats.t.ppf(1.0 - alpha / 2, t - 1) * se
    top = np.log(k)  # both measures lie in [0, log K]
    return Interval(val, se, np.clip(val - half, 0.0, top), np.clip(val + half, 0.0, top))


def _variation_ratio_interval(p: FloatArray, alpha: float) -> Interval:
    t, _, k = p.shape
    votes = p.argmax(axis=2)
    counts = np.stack([np.sum(votes == c, axis=0) for c in range(k)], axis=1)  # (N, K)
    f = counts.max(axis=1).astype(np.float64)
    share = f / t
    # Clopper-Pearson bounds of the modal share; beta.ppf is nan at the edges, which are 0 / 1.
    with np.errstate(invalid="ignore"):
        lo_share = np.where(f > 0, stats.beta.ppf(alpha / 2, f, t - f + 1), 0.0)
        hi_share = np.where(f < t, stats.beta.ppf(1 - alpha / 2, f + 1, t - f), 1.0)
    se = np.sqrt(share * (1.0 - share) / t)
    return Interval(1.0 - share, se, 1.0 - hi_share, 1.0 - lo_share)


__all__ = [
    "DEFAULT_CONFIDENCE",
    "FIRST_ROUND",
    "Interval",
    "classification_interval",
    "look_alpha",
    "mean_se",
    "regression_interval",
    "schedule",
]

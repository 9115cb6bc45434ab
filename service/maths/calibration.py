"""Choosing the abstain threshold from held-out data, with a finite-sample guarantee.

Pure numpy/scipy. Items with uncertainty <= threshold are retained, the rest referred.

Risk targets (retained error rate <= alpha, or retained MSE <= alpha) use Learn then Test
(Angelopoulos, Bates et al., 2021) with fixed-sequence testing:
1. The held-out rows are split at random. The *selection* part fixes everything that may look at
   data: the uncertainty metric (lowest AURC) and the candidate thresholds (quantiles of its
   uncertainty). The *test* part is used only for the p-values, so the candidates are fixed
   with respect to it, as LTT requires.
2. For a candidate threshold t, H_t says "the retained risk R(t) = E[loss | u <= t] > alpha".
   Given the number n_t of test rows retained, those rows are i.i.d. draws from the retained
   distribution, so a p-value valid for n_t i.i.d. losses is valid for H_t:
   - 0/1 loss (classification error): the exact binomial tail P(Bin(n_t, alpha) <= errors),
     i.e. H_t is rejected exactly when the Clopper-Pearson upper bound is below alpha;
   - loss in [0, 1] (squared error over a bound): the Hoeffding-Bentkus p-value (Bates et al.,
     "Distribution-free, risk-controlling prediction sets", 2021).
3. Candidates are tested from the most conservative (fewest retained) to the least, each at level
   delta, stopping at the first that is not rejected. Fixed-sequence testing controls the
   family-wise error at delta, so the largest rejected threshold t* has R(t*) <= alpha with
   probability >= 1 - delta over the held-out set.

Referral targets (refer at most a fraction r) need no labels: with u_(j) the j-th smallest of n
uncertainties, the population referral rate P(u > u_(j)) is at most Beta(n - j + 1, j)
distributed (exactly so for continuous u), so the smallest j with P(Beta > r) <= delta gives a
threshold whose referral rate is <= r with probability >= 1 - delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats
from scipy.optimize import brentq
from scipy.special import rel_entr

FloatArray = NDArray[np.float64]


class TargetUnreachable(ValueError):
    """No candidate threshold meets the target at the requested confidence."""


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and what it achieves on the rows that tested it."""

    threshold: float
    coverage: float  # fraction retained
    risk: float  # mean retained loss (error rate, or MSE); NaN for a referral target
    risk_upper_bound: float  # 1 - delta upper bound on the retained risk at this threshold
    n_select: int
    n_test: int
    candidates: int  # hypotheses in the fixed sequence
    rejected: int  # how many of them were rejected before the first failure


# ------------------------------------------------------------------------------ p-values


def binomial_pvalue(
    errors: NDArray[np.integer], n: NDArray[np.integer], alpha: float
) -> FloatArray:
    """P(Bin(n, alpha) <= errors): small when n retained rows show far fewer than alpha*n errors."""
    k = np.asarray(errors, np.float64)
    nn = np.asarray(n, np.float64)
    p = stats.binom.cdf(k, np.maximum(nn, 1), alpha)
    out: FloatArray = np.where(nn > 0, p, 1.0)
    return out


def hoeffding_bentkus_pvalue(
    mean_loss: NDArray[np.floating], n: NDArray[np.integer], alpha: float
) -> FloatArray:
    """min(exp(-n h1(min(R, alpha), alpha)), e P(Bin(n, alpha) <= ceil(n R))) for losses in [0,
    1]."""
    r = np.asarray(mean_loss, np.float64)
    nn = np.asarray(n, np.float64)
    a = np.minimum(r, alpha)
    h1 = rel_entr(a, alpha) + rel_entr(1.0 - a, 1.0 - alpha)
    hoeffding = np.exp(-nn * h1)
    bentkus = math.e * stats.binom.cdf(np.ceil(nn * r), np.maximum(nn, 1), alpha)
    out: FloatArray = np.where(nn > 0, np.minimum(np.minimum(hoeffding, bentkus), 1.0), 1.0)
    return out


def clopper_pearson_upper(errors: int, n: int, delta: float) -> float:
    """One-sided (1 - delta) upper confidence bound on a binomial proportion."""
    if n == 0 or errors >= n:
        return 1.0
    return float(stats.beta.ppf(1.0 - delta, errors + 1, n - errors))


def hoeffding_bentkus_upper(mean_loss: float, n: int, delta: float) -> float:
    """Smallest alpha the Hoeffding-Bentkus test cannot reject at level delta (bisection)."""
    if n == 0 or mean_loss >= 1.0:
        return 1.0

    def gap(alpha: float) -> float:
        return (
            float(hoeffding_bentkus_pvalue(np.array([mean_loss]), np.array([n]), alpha)[0]) - delta
        )

    lo, hi = max(mean_loss, 1e-12), 1.0 - 1e-12
    if gap(hi) > 0:
        return 1.0
    if gap(lo) <= 0:
        return lo
    return float(brentq(gap, lo, hi, xtol=1e-10))


def fixed_sequence(pvalues: NDArray[np.floating], delta: float) -> int:
    """Number of hypotheses rejected, testing in order at level delta until the first failure."""
    fails = np.flatnonzero(np.asarray(pvalues) > delta)
    return int(fails[0]) if len(fails) else len(pvalues)


# -------------------------------------------------------------------------- calibration


def select_test_split(
    n: int, select_fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """A seeded random split of n held-out rows into (selection, test) index arrays."""
    if not 0.0 < select_fraction < 1.0:
        raise ValueError(f"select_fraction must be in (0, 1), got {select_fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_sel = max(1, round(n * select_fraction))
    return np.sort(perm[:n_sel]), np.sort(perm[n_sel:])


def min_rows_to_reject(alpha: float, delta: float) -> int:
    """The fewest retained rows with which zero losses reject R > alpha: (1 - alpha)^n <= delta."""
    return math.ceil(math.log(delta) / math.log1p(-alpha))


def candidate_thresholds(
    u_select: NDArray[np.floating],
    loss_select: NDArray[np.floating],
    n_test: int,
    alpha: float,
    delta: float,
    binary: bool,
    step: float = 0.0025,
) -> FloatArray:
    """Thresholds at coverages step, 2 step, ..., 1 of the selection part, in testing order.

    Fixed-sequence testing stops at the first candidate it cannot reject, so the sequence starts
    where a rejection is most likely: at the candidate whose p-value would be smallest if the
    test part looked like the selection part (its risk, c * n_test rows). From there it runs
    towards less conservative thresholds. Only the selection part is looked at, so the order is
    fixed before the test part is seen.
    """
    u = np.asarray(u_select, np.float64)
    ls = np.asarray(loss_select, np.float64)
    finite = np.isfinite(u)
    u, ls = u[finite], ls[finite]
    if len(u) == 0:
        return np.zeros(0)
    levels = np.arange(1, round(1.0 / step) + 1) * step
    t = np.quantile(u, np.minimum(levels, 1.0), method="inverted_cdf")
    _, first = np.unique(t, return_index=True)
    keep = np.sort(first)
    t, levels = t[keep], levels[keep]
    retained = u[None, :] <= t[:, None]
    risk_sel = (retained * ls[None, :]).sum(axis=1) / np.maximum(retained.sum(axis=1), 1)
    n_exp = np.floor(levels * n_test)
    if binary:
        p_est = binomial_pvalue(
            np.floor(risk_sel * n_exp).astype(np.int64), n_exp.astype(np.int64), alpha
        )
    else:
        p_est = hoeffding_bentkus_pvalue(risk_sel, n_exp.astype(np.int64), alpha)
    start = int(np.argmin(p_est))
    out: FloatArray = t[start:]
    return out


def _test_candidates(
    cands: FloatArray, u_test: FloatArray, loss_test: FloatArray, alpha: float, binary: bool
) -> tuple[NDArray[np.int64], FloatArray, FloatArray]:
    """Per candidate threshold: retained test rows, their summed loss, and the p-value of
    "retained risk > alpha"."""
    ut = np.where(np.isfinite(u_test), u_test, np.inf)
    retained = ut[None, :] <= cands[:, None]  # (C, n_test)
    n_t = retained.sum(axis=1)
    loss_sum = (retained * loss_test[None, :]).sum(axis=1)
    if binary:
        pvals = binomial_pvalue(np.round(loss_sum).astype(np.int64), n_t, alpha)
    else:
        pvals = hoeffding_bentkus_pvalue(loss_sum / np.maximum(n_t, 1), n_t, alpha)
    return n_t, loss_sum, pvals


def calibrate_risk(
    uncertainty: NDArray[np.floating],
    loss: NDArray[np.floating],
    alpha: float,
    delta: float,
    binary: bool,
    split: tuple[NDArray[np.intp], NDArray[np.intp]],
    target: str | None = None,
) -> OperatingPoint:
    """Largest threshold with retained risk <= alpha at confidence 1 - delta (Learn then Test).

    loss: 0/1 errors when binary, else values in [0, 1]. split: (selection, test) indices.
    target: the goal in the caller's units (e.g. "retained RMSE <= 0.6"), for messages; the
    loss may be a rescaled one the caller would not recognise.
    Raises TargetUnreachable when not even the most conservative candidate is certified.
    """
    goal = target or f"retained risk <= {alpha:g}"
    if not 0.0 < alpha < 1.0 or not 0.0 < delta < 1.0:
        raise ValueError(f"alpha and delta must be in (0, 1), got {alpha} and {delta}")
    u = np.asarray(uncertainty, np.float64)
    ls = np.asarray(loss, np.float64)
    if np.any(ls < 0) or np.any(ls > 1) or (binary and np.any((ls != 0) & (ls != 1))):
        raise ValueError("loss must be 0/1 (binary) or in [0, 1]")
    sel, test = split
    cands = candidate_thresholds(u[sel], ls[sel], len(test), alpha, delta, binary)
    n_t, loss_sum, pvals = _test_candidates(cands, u[test], ls[test], alpha, binary)
    rejected = fixed_sequence(pvals, delta)
    need = min_rows_to_reject(alpha, delta)
    if need > len(test):
        raise TargetUnreachable(
            f"too few held-out rows: certifying a {goal} at confidence "
            f"{1 - delta:g} needs at least {need} retained rows even with no errors, and the "
            f"test part has {len(test)}"
        )
    if rejected == 0 or len(cands) == 0:
        raise TargetUnreachable(
            f"no threshold certifies a {goal} at confidence {1 - delta:g}: "
            f"{len(cands)} candidate(s), the most conservative has p-value "
            f"{float(pvals[0]) if len(pvals) else 1.0:.3g} > delta = {delta:g}"
        )
    j = rejected - 1
    n_j, s_j = int(n_t[j]), float(loss_sum[j])
    bound = (
        clopper_pearson_upper(round(s_j), n_j, delta)
        if binary
        else hoeffding_bentkus_upper(s_j / n_j, n_j, delta)
    )
    return OperatingPoint(
        threshold=float(cands[j]),
        coverage=n_j / len(test),
        risk=s_j / n_j,
        risk_upper_bound=bound,
        n_select=len(sel),
        n_test=len(test),
        candidates=len(cands),
        rejected=rejected,
    )


def calibrate_referral(
    uncertainty: NDArray[np.floating], max_rate: float, delta: float
) -> OperatingPoint:
    """Smallest order statistic whose population referral rate is <= max_rate w.p. >= 1 - delta."""
    if not 0.0 < max_rate < 1.0 or not 0.0 < delta < 1.0:
        raise ValueError(f"max_rate and delta must be in (0, 1), got {max_rate} and {delta}")
    u = np.sort(np.where(np.isfinite(uncertainty), uncertainty, np.inf))
    n = len(u)
    j = np.arange(1, n + 1)
    # P(referral rate at u_(j) > r) <= P(Beta(n - j + 1, j) > r), decreasing in j.
    tail = stats.beta.sf(max_rate, n - j + 1, j)
    ok = np.flatnonzero(tail <= delta)
    if len(ok) == 0 or not np.isfinite(u[ok[0]]):
        raise TargetUnreachable(
            f"{n} held-out rows cannot certify a referral rate <= {max_rate:g} at confidence "
            f"{1 - delta:g} (needs at least {math.ceil(math.log(delta) / math.log1p(-max_rate))})"
        )
    k = int(ok[0])
    threshold = float(u[k])
    coverage = float(np.mean(u <= threshold))
    return OperatingPoint(
        threshold=threshold,
        coverage=coverage,
        risk=float("nan"),
        risk_upper_bound=float(stats.beta.isf(delta, n - k, k + 1)),
        n_select=0,
        n_test=n,
        candidates=n,
        rejected=n - k,
    )

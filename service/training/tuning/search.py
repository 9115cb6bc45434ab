"""The two searches of `mcdrop tune`, as pure numerics (no torch, no training).

The dropout rate changes the network, so every value costs a training run: it lives on a grid in
log space that grows round by round, past a winning edge (widen) or between the best value and
its neighbours (refine). tau only enters the likelihood of a trained network, so it is fitted
continuously on the validation passes (Brent's method in log tau), and its bracket moves out
whenever the optimum sits on an edge. Either way a chosen value is interior, or says which edge
it sits on and why (a hard bound, or the budget ran out).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

Edge = Literal["low", "high"]


@dataclass(frozen=True)
class Axis:
    """A positive parameter searched in log space, within hard bounds."""

    lo: float
    hi: float
    # Refining stops when the best value and its neighbour are closer than this ratio.
    min_ratio: float = 1.25

    def __post_init__(self) -> None:
        if not 0 < self.lo < self.hi:
            raise ValueError(f"an axis needs 0 < lo < hi, got lo={self.lo}, hi={self.hi}")


@dataclass(frozen=True)
class Choice:
    value: float
    edge: Edge | None  # None: interior (a better value on either side was looked for)
    why: str | None  # for an edge: "hard bound" or "budget"


def _best(scores: dict[float, float]) -> tuple[list[float], int]:
    values = sorted(scores)
    return values, int(np.argmax([scores[v] for v in values]))


def next_points(scores: dict[float, float], axis: Axis, limit: int) -> list[float]:
    """Values to train next, given validation scores of the values trained so far.

    Best at an edge that is not a hard bound: step out by the outermost gap (at least 2x), and
    twice that. Best inside: the geometric midpoints to each neighbour still far enough apart.
    """
    if limit <= 0 or not scores:
        return []
    values, i = _best(scores)
    logs = [math.log(v) for v in values]
    new: list[float] = []
    if i == 0 and values[0] > axis.lo * (1 + 1e-9):
        gap = max(logs[1] - logs[0], math.log(2.0)) if len(values) > 1 else math.log(4.0)
        new = [max(axis.lo, math.exp(logs[0] - k * gap)) for k in (1, 2)]
    elif i == len(values) - 1 and values[-1] < axis.hi * (1 - 1e-9):
        gap = max(logs[-1] - logs[-2], math.log(2.0)) if len(values) > 1 else math.log(4.0)
        new = [min(axis.hi, math.exp(logs[-1] + k * gap)) for k in (1, 2)]
    else:
        for j in (i - 1, i + 1):
            if (
                0 <= j < len(values)
                and max(values[i], values[j]) / min(values[i], values[j]) > axis.min_ratio
            ):
                new.append(math.sqrt(values[i] * values[j]))
    fresh = sorted({round(v, 12) for v in new} - {round(v, 12) for v in values})
    return fresh[:limit]


def choose(scores: dict[float, float], axis: Axis) -> Choice:
    """The best value, and whether it sits on an edge of what was tried."""
    values, i = _best(scores)
    v = values[i]
    if len(values) > 1 and 0 < i < len(values) - 1:
        return Choice(v, None, None)
    edge: Edge = "low" if i == 0 and (len(values) > 1 or v <= axis.lo) else "high"
    at_bound = v <= axis.lo * (1 + 1e-9) if edge == "low" else v >= axis.hi * (1 - 1e-9)
    return Choice(v, edge, "hard bound" if at_bound else "budget")


# ------------------------------------------------------------------------------------- tau


def mc_log_likelihood_of_tau(
    samples: NDArray[np.floating], y: NDArray[np.floating]
) -> Callable[[float], float]:
    """tau -> the paper's MC log-likelihood of y (N,) under samples (T, N).

    The search evaluates this some 25 times per network and checkpoint, so the work that does
    not depend on tau is done once: with e = sq - min_t sq >= 0,
    logsumexp_t(-tau sq / 2) = -tau min_t sq / 2 + log sum_t exp(-tau e / 2), whose largest term
    is exp(0) = 1, so the sum neither overflows nor underflows and needs no max pass.
    """
    s = np.asarray(samples, np.float64)
    sq = (s - np.asarray(y, np.float64)[None, :]) ** 2
    low = sq.min(axis=0)
    excess = sq - low
    mean_low = float(low.mean())
    buf = np.empty_like(excess)
    t = s.shape[0]
    const = -math.log(t) - 0.5 * math.log(2 * math.pi)

    def ll(tau: float) -> float:
        np.multiply(excess, -0.5 * tau, out=buf)
        np.exp(buf, out=buf)
        lse = float(np.log(buf.sum(axis=0)).mean()) - 0.5 * tau * mean_low
        return lse + const + 0.5 * math.log(tau)

    return ll


def gaussian_log_likelihood_of_tau(
    mean: NDArray[np.floating], spread: NDArray[np.floating], y: NDArray[np.floating]
) -> Callable[[float], float]:
    """tau -> mean log N(y; mean, 1/tau + spread): a Gaussian whose variance adds 1/tau."""
    sq = (np.asarray(y, np.float64) - np.asarray(mean, np.float64)) ** 2
    sp = np.asarray(spread, np.float64)

    def ll(tau: float) -> float:
        var = 1.0 / tau + sp
        return float(np.mean(-0.5 * (np.log(2 * math.pi * var) + sq / var)))

    return ll


@dataclass(frozen=True)
class TauFit:
    tau: float
    log_likelihood: float
    brackets: list[tuple[float, float]]  # every bracket searched, the first one given
    edge: Edge | None  # None: interior; else the optimum sat on this edge of the last bracket


TAU_LIMITS = (1e-8, 1e12)


def fit_tau(
    ll: Callable[[float], float],
    lo: float,
    hi: float,
    limits: tuple[float, float] = TAU_LIMITS,
    max_widenings: int = 12,
) -> TauFit:
    """The tau maximising ll within [lo, hi]; an optimum on an edge moves the bracket out.

    Each widening doubles the bracket's log-width on the winning side, keeping the old edge
    inside, so the optimum is bracketed after a few steps wherever it lies.
    """
    if not 0 < lo < hi:
        raise ValueError(f"a tau range needs 0 < lo < hi, got {lo}, {hi}")
    brackets: list[tuple[float, float]] = []
    edge: Edge | None = None
    for _ in range(max_widenings + 1):
        brackets.append((lo, hi))
        a, b = math.log(lo), math.log(hi)
        res = minimize_scalar(
            lambda z: -ll(math.exp(z)), bounds=(a, b), method="bounded", options={"xatol": 1e-4}
        )
        z = float(res.x)
        near = 1e-3 * max(b - a, 1.0)
        edge = "low" if z - a < near else "high" if b - z < near else None
        if edge == "low" and lo > limits[0]:
            lo = max(limits[0], math.exp(a - (b - a)))
        elif edge == "high" and hi < limits[1]:
            hi = min(limits[1], math.exp(b + (b - a)))
        else:
            break
    return TauFit(math.exp(z), float(-res.fun), brackets, edge)

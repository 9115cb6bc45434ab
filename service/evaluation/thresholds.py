"""Choosing an abstain threshold from scored held-out rows, for the goal `mcdrop calibrate` has.

The measure (the lowest AURC) and candidate thresholds are chosen on a selection part only, and
the guarantee is tested on the rest (see service/maths/calibration.py for why that holds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.evaluation.heldout import Scored
from service.maths import calibration
from service.maths.calibration import OperatingPoint
from service.maths.selective import aurc

SELECT_FRACTION = 0.2


@dataclass(frozen=True)
class Goal:
    """Exactly one of the three targets is set."""

    max_referral_rate: float | None
    target_error: float | None
    target_rmse: float | None
    delta: float
    error_bound: float | None  # with target_rmse: |error| assumed <= this


@dataclass
class Selection:
    """The measure chosen on the selection rows, and the rows that choice never looked at."""

    metric: str
    sel: NDArray[np.intp]
    test: NDArray[np.intp]
    aurcs: dict[str, float]


@dataclass
class Calibrated:
    """The operating point for the goal, with what the manifest records about it."""

    op: OperatingPoint
    target: dict[str, float]
    method: str
    risk: float
    risk_bound: float | None


def choose_metric(
    scored: Scored, metrics: Sequence[str], metric: str | None, goal: Goal, seed: int
) -> Selection:
    """`metric` when given, else the one with the lowest AURC on the selection rows."""
    n = len(scored.loss)
    needs_split = goal.max_referral_rate is None or metric is None
    sel, test = (
        calibration.select_test_split(n, SELECT_FRACTION, seed)
        if needs_split
        else (np.zeros(0, np.intp), np.arange(n))
    )
    regression = scored.task == "regression"
    aurcs = {
        m: aurc(scored.uncertainty[m][sel], scored.loss[sel], root=regression)
        for m in metrics
        if len(sel)
    }
    return Selection(metric or min(aurcs, key=lambda m: aurcs[m]), sel, test, aurcs)


def operating_point(goal: Goal, scored: Scored, selection: Selection) -> Calibrated:
    """Raises calibration.TargetUnreachable when no threshold meets the goal."""
    if goal.max_referral_rate is not None:
        return _by_referral_rate(goal.max_referral_rate, goal.delta, scored, selection)
    if goal.target_error is not None:
        return _by_error(goal.target_error, goal.delta, scored, selection)
    assert goal.target_rmse is not None and goal.error_bound is not None
    return _by_rmse(goal.target_rmse, goal.error_bound, goal.delta, scored, selection)


def _by_referral_rate(
    rate: float, delta: float, scored: Scored, selection: Selection
) -> Calibrated:
    u, test = scored.uncertainty[selection.metric], selection.test
    op = calibration.calibrate_referral(u[test], rate, delta)
    kept_loss = float(np.mean(scored.loss[test][u[test] <= op.threshold]))
    return Calibrated(
        op,
        {"max_referral_rate": rate},
        "order statistic with a Beta(n - j + 1, j) bound on the referral rate",
        float(np.sqrt(kept_loss)) if scored.task == "regression" else kept_loss,
        None,
    )


def _by_error(error: float, delta: float, scored: Scored, selection: Selection) -> Calibrated:
    goal = f"retained error rate <= {error:g}"
    u = scored.uncertainty[selection.metric]
    rows = (selection.sel, selection.test)
    op = calibration.calibrate_risk(u, scored.loss, error, delta, True, rows, goal)
    return Calibrated(
        op,
        {"target_error": error},
        "learn-then-test, fixed-sequence, binomial (Clopper-Pearson) p-values",
        op.risk,
        op.risk_upper_bound,
    )


def _by_rmse(
    rmse: float, bound: float, delta: float, scored: Scored, selection: Selection
) -> Calibrated:
    """Squared errors clipped at the bound and scaled into [0, 1], so Hoeffding-Bentkus applies."""
    scale = bound**2
    loss01 = np.minimum(scored.loss, scale) / scale
    alpha = rmse**2 / scale
    if alpha >= 1.0:
        raise ValueError("--target-rmse must be below --error-bound")
    goal = f"retained RMSE <= {rmse:g} (errors clipped at {bound:.4g})"
    u = scored.uncertainty[selection.metric]
    rows = (selection.sel, selection.test)
    op = calibration.calibrate_risk(u, loss01, alpha, delta, False, rows, goal)
    target = {
        "target_rmse": rmse,
        "error_bound": bound,
        "rows_over_error_bound": int(np.sum(scored.loss > scale)),
    }
    return Calibrated(
        op,
        target,
        "learn-then-test, fixed-sequence, Hoeffding-Bentkus p-values on clipped squared error",
        float(np.sqrt(op.risk * scale)),
        float(np.sqrt(op.risk_upper_bound * scale)),
    )

"""Calibration with a guarantee: p-values, fixed-sequence testing, and seeded simulations.

Synthetic model: uncertainty u ~ Uniform(0, 1) and P(error | u) = 0.2 u, so the retained risk at
threshold t is R(t) = E[0.2 u | u <= t] = 0.1 t, and a target alpha = 0.05 is met exactly by the
thresholds t <= 0.5. A trial fails when the chosen threshold exceeds 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from service.maths import calibration

ALPHA, DELTA = 0.05, 0.10
T_STAR = 0.5  # R(t) = 0.1 t <= ALPHA  <=>  t <= 0.5
N_CAL, TRIALS = 5000, 200


def _failure_limit(trials: int, delta: float) -> float:
    """Failures are Binomial(trials, p) with p <= delta if the guarantee holds; allow the mean
    plus 3 binomial standard errors, sqrt(trials delta (1 - delta)), a one-sided 0.13% chance of
    a false alarm when p = delta exactly."""
    return trials * delta + 3.0 * math.sqrt(trials * delta * (1.0 - delta))


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    u = rng.uniform(size=n)
    wrong = (rng.uniform(size=n) < 0.2 * u).astype(np.float64)
    return u, wrong


def test_binomial_pvalue_and_clopper_pearson_match_closed_forms() -> None:
    # P(Bin(10, 1/2) <= 0) = 2^-10; P(Bin(4, 1/2) <= 1) = 5/16; no rows: no evidence.
    p = calibration.binomial_pvalue(np.array([0, 1, 0]), np.array([10, 4, 0]), 0.5)
    assert p == pytest.approx([2.0**-10, 5 / 16, 1.0])
    # With zero errors the upper bound solves (1 - b)^n = delta.
    assert calibration.clopper_pearson_upper(0, 50, 0.05) == pytest.approx(1 - 0.05 ** (1 / 50))
    assert calibration.clopper_pearson_upper(5, 5, 0.05) == 1.0
    # Rejecting "risk > alpha" at level delta <=> the (1 - delta) upper bound is below alpha.
    for k, n in [(2, 100), (5, 100), (9, 300)]:
        upper = calibration.clopper_pearson_upper(k, n, DELTA)
        rejected = calibration.binomial_pvalue(np.array([k]), np.array([n]), ALPHA)[0] <= DELTA
        assert rejected == (upper < ALPHA)


def test_hoeffding_bentkus_pvalue_is_valid_for_bernoulli_losses() -> None:
    # For 0/1 losses it may not beat the exact binomial tail, which is the most powerful test.
    k, n = np.array([3, 10, 40]), np.array([200, 200, 400])
    hb = calibration.hoeffding_bentkus_pvalue(k / n, n, ALPHA)
    exact = calibration.binomial_pvalue(k, n, ALPHA)
    assert np.all(hb >= exact - 1e-12)
    assert np.all((hb >= 0) & (hb <= 1))


def test_fixed_sequence_stops_at_the_first_failure() -> None:
    assert calibration.fixed_sequence(np.array([0.01, 0.02, 0.2, 0.01]), 0.05) == 2
    assert calibration.fixed_sequence(np.array([0.3, 0.01]), 0.05) == 0
    assert calibration.fixed_sequence(np.array([0.01, 0.01]), 0.05) == 2


def test_error_rate_guarantee_holds_in_repeated_trials() -> None:
    rng = np.random.default_rng(20240611)
    failures, naive_failures, thresholds = 0, 0, []
    for trial in range(TRIALS):
        u, wrong = _draw(rng, N_CAL)
        split = calibration.select_test_split(N_CAL, 0.2, trial)
        try:
            op = calibration.calibrate_risk(u, wrong, ALPHA, DELTA, binary=True, split=split)
        except calibration.TargetUnreachable:  # refusing is safe: not a failure, and counted below
            thresholds.append(0.0)
            continue
        failures += op.threshold > T_STAR
        thresholds.append(op.threshold)
        # The plug-in rule (largest t whose empirical risk is <= alpha) has no guarantee.
        order = np.argsort(u)
        running = np.cumsum(wrong[order]) / np.arange(1, N_CAL + 1)
        naive_failures += u[order][np.flatnonzero(running <= ALPHA).max()] > T_STAR
    limit = _failure_limit(TRIALS, DELTA)
    assert failures <= limit, f"{failures} of {TRIALS} trials broke the guarantee (limit {limit})"
    # The check has teeth: the plug-in rule breaks it in about half the trials.
    assert naive_failures > limit
    # And the guarantee is not bought by refusing everything: with 4,000 test rows the chosen
    # thresholds sit not far below t* = 0.5 (about 0.43 on average; a refusal counts as 0).
    assert np.mean(thresholds) > 0.3


def test_bounded_loss_guarantee_holds_in_repeated_trials() -> None:
    # loss = 0.4 u B with B ~ Uniform(0, 1): in [0, 0.4], E[loss | u] = 0.2 u, so R(t) = 0.1 t.
    rng = np.random.default_rng(7)
    trials, failures = 100, 0
    for trial in range(trials):
        u = rng.uniform(size=N_CAL)
        loss = 0.4 * u * rng.uniform(size=N_CAL)
        split = calibration.select_test_split(N_CAL, 0.2, trial)
        try:
            op = calibration.calibrate_risk(u, loss, ALPHA, DELTA, False, split)
        except calibration.TargetUnreachable:
            continue
        failures += op.threshold > T_STAR
        assert op.risk_upper_bound >= op.risk
    assert failures <= _failure_limit(trials, DELTA)


def test_referral_guarantee_holds_in_repeated_trials() -> None:
    # u ~ Uniform(0, 1): the population referral rate at threshold t is 1 - t.
    rng = np.random.default_rng(11)
    rate, trials, failures, rates = 0.1, TRIALS, 0, []
    for _ in range(trials):
        op = calibration.calibrate_referral(rng.uniform(size=500), rate, DELTA)
        failures += 1.0 - op.threshold > rate
        rates.append(1.0 - op.threshold)
        assert op.risk_upper_bound <= rate
    assert failures <= _failure_limit(trials, DELTA)
    # The order-statistic bound is exact for continuous u, so failures happen at about delta:
    # at least mean - 3 standard errors (a 0.13% chance of a false alarm).
    assert failures >= trials * DELTA - 3.0 * math.sqrt(trials * DELTA * (1 - DELTA))
    assert float(np.mean(rates)) == pytest.approx(rate, abs=0.02)


def test_referral_threshold_is_the_exact_order_statistic() -> None:
    u = np.arange(1, 101, dtype=np.float64)  # u_(j) = j
    op = calibration.calibrate_referral(u, 0.2, 0.05)
    j = int(op.threshold)
    assert stats.beta.sf(0.2, 100 - j + 1, j) <= 0.05 < stats.beta.sf(0.2, 100 - j + 2, j - 1)


def test_unmeetable_targets_are_refused() -> None:
    rng = np.random.default_rng(3)
    u = rng.uniform(size=2000)
    wrong = (rng.uniform(size=2000) < 0.3).astype(np.float64)  # 30% errors at every threshold
    split = calibration.select_test_split(2000, 0.2, 0)
    with pytest.raises(calibration.TargetUnreachable, match="no threshold certifies"):
        calibration.calibrate_risk(u, wrong, 0.05, 0.05, True, split)
    with pytest.raises(calibration.TargetUnreachable, match="too few held-out rows"):
        calibration.calibrate_risk(
            u[:100], np.zeros(100), 0.001, 0.05, True, calibration.select_test_split(100, 0.2, 0)
        )
    with pytest.raises(calibration.TargetUnreachable, match="cannot certify"):
        calibration.calibrate_referral(u[:10], 0.05, 0.05)

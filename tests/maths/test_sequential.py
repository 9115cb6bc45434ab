"""Adaptive T maths: schedule, intervals, and the wrong-early-decision rate on a known model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.maths import sequential
from service.serving.adaptive import AdaptiveRun


def test_schedule_doubles_up_to_the_cap() -> None:
    assert sequential.schedule(100) == [16, 32, 64, 100]
    assert sequential.schedule(100, first=8) == [8, 16, 32, 64, 100]
    assert sequential.schedule(16) == [16]
    assert sequential.schedule(5) == [5]
    assert sequential.look_alpha(0.99, 4) == pytest.approx(0.0025)


def _entropy(p: np.ndarray) -> float:
    return float(-np.sum(p * np.log(p)))


def _two_point_rows(
    n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Rows whose T samples are one of two softmax vectors a (prob q) or b (1 - q).

    The limit T → ∞ is known exactly: the mean is q a + (1 - q) b, so the predictive entropy is
    H(q a + (1-q) b), the mutual information that minus q H(a) + (1-q) H(b), and the variation
    ratio 1 - max(q, 1-q) when a and b vote for different classes.
    """
    a = np.array([0.80, 0.15, 0.05])
    b = np.array([0.10, 0.85, 0.05])
    q = rng.uniform(0.0, 0.5, size=n)
    truth = {
        "predictive_entropy": np.array([_entropy(x * a + (1 - x) * b) for x in q]),
        "mutual_information": np.array(
            [_entropy(x * a + (1 - x) * b) - x * _entropy(a) - (1 - x) * _entropy(b) for x in q]
        ),
        "variation_ratio": np.minimum(q, 1 - q),
    }
    return a, b, q, truth


def _wrong_early_rate(metric: str, confidence: float, seed: int) -> tuple[float, int, float]:
    rng = np.random.default_rng(seed)
    n = 3000
    a, b, q, truth = _two_point_rows(n, rng)
    true_value = truth[metric]
    # The threshold sits in the middle of the rows' true values, so many rows are near it.
    thr = float(np.median(true_value))
    run = AdaptiveRun(
        n,
        3,
        128,
        thr,
        confidence,
        lambda s, alpha: sequential.classification_interval(s, metric, alpha),
    )
    while (plan := run.next_round()) is not None:
        pick = rng.random((plan.count, plan.rows.size)) < q[plan.rows]
        run.record(plan, np.where(pick[..., None], a, b).astype(np.float32))
    early = run.settled
    decided_abstain = np.zeros(n, bool)
    for t, rows in run.groups():
        iv = sequential.classification_interval(run.buffer[:t, rows], metric, run.alpha)
        decided_abstain[rows] = iv.lower > thr
    wrong = early & (decided_abstain != (true_value > thr))
    return float(wrong.mean()), n, float(early.mean())


@pytest.mark.parametrize("metric", ["predictive_entropy", "mutual_information", "variation_ratio"])
def test_wrong_early_decisions_stay_under_one_minus_confidence(metric: str) -> None:
    rate, n, early = _wrong_early_rate(metric, 0.99, seed=11)
    # Each row stops early on the wrong side with probability at most 1 - confidence = 0.01
    # (Bonferroni over its looks). Over n independent rows the wrong-early count is binomial, so
    # its rate exceeds 0.01 + 3·sqrt(0.01·0.99/n) with probability under 0.2% if the bound holds.
    assert rate <= 0.01 + 3 * math.sqrt(0.01 * 0.99 / n), (rate, early)
    assert early > 0.3  # and it does stop early: most rows are not on the threshold


def test_the_simulation_detects_an_overconfident_rule() -> None:
    # With confidence 0.5 the same simulation must report far more wrong early decisions than
    # 0.01: otherwise the test above could not fail.
    rate, n, _ = _wrong_early_rate("predictive_entropy", 0.5, seed=11)
    assert rate > 0.01 + 3 * math.sqrt(0.01 * 0.99 / n)


def test_regression_interval_matches_chi_square_bounds() -> None:
    rng = np.random.default_rng(0)
    s = rng.normal(size=(20, 1, 1))
    iv = sequential.regression_interval(s, tau=4.0, metric="variance", alpha=0.05)
    s2 = float(np.var(s, ddof=1))
    from scipy import stats

    assert iv.lower[0] == pytest.approx(19 * s2 / stats.chi2.ppf(0.975, 19) + 0.25)
    assert iv.upper[0] == pytest.approx(19 * s2 / stats.chi2.ppf(0.025, 19) + 0.25)
    assert iv.value[0] == pytest.approx(float(np.var(s)) + 0.25)


def test_delta_method_se_matches_the_spread_over_repeats() -> None:
    # The delta-method SE of the entropy should match the sd of the estimate over many
    # independent repeats; with 400 repeats that sd is known to about 1/sqrt(2·399) = 3.5%,
    # so agreement within 20% leaves room for the O(1/T) terms the linearisation drops.
    rng = np.random.default_rng(3)
    a, b = np.array([0.7, 0.2, 0.1]), np.array([0.2, 0.6, 0.2])
    pick = rng.random((400, 64)) < 0.3
    probs = np.where(pick[..., None], a, b).transpose(1, 0, 2)  # (T=64, N=400, K=3)
    iv = sequential.classification_interval(probs, "predictive_entropy", 0.05)
    assert float(np.mean(iv.se)) == pytest.approx(float(np.std(iv.value, ddof=1)), rel=0.2)

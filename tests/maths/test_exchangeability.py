"""The online exchangeability test: exact p-values, a fair martingale, bounded false alarms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from service.artifacts.manifest import read_manifest
from service.artifacts.reference import load_reference
from service.maths.exchangeability import (
    ChangePointMixture,
    ExchangeabilityTest,
    RankCounter,
    clopper_pearson,
)

FASHION = Path("models/fashion-mnist")


def test_pvalue_is_the_smoothed_conformal_rank_among_every_score_so_far() -> None:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 5, 40).astype(float)  # many ties: the theta term matters
    counter = RankCounter(reference)
    edges = np.unique(reference)

    def binned(s: float) -> int:  # scores are ranked by bin (edges[i-1], edges[i]]
        return int(np.sum(edges < s))

    seen = [binned(s) for s in reference]
    for score in rng.uniform(-1, 7, 30).round(1):
        theta = float(rng.random())
        b = binned(score)
        greater = sum(s > b for s in seen)
        equal = sum(s == b for s in seen)
        expected = (greater + theta * (equal + 1)) / (len(seen) + 1)
        assert counter.pvalue_then_add(float(score), theta) == pytest.approx(expected, abs=1e-12)
        seen.append(b)


def test_binned_pvalues_are_uniform_when_live_scores_are_exchangeable() -> None:
    # More distinct reference values than bins, so the quantile binning is exercised.
    rng = np.random.default_rng(1)
    counter = RankCounter(rng.normal(size=5000), max_bins=64)
    p = [
        counter.pvalue_then_add(float(s), float(t))
        for s, t in zip(rng.normal(size=20_000), rng.random(20_000), strict=True)
    ]
    # Exactly uniform under the null: a KS test at the 0.001 level fails only on a real defect.
    assert stats.kstest(p, "uniform").pvalue > 1e-3


def test_larger_uncertainty_gives_small_pvalues() -> None:
    counter = RankCounter(np.linspace(0.0, 1.0, 101))
    assert counter.pvalue_then_add(5.0, 0.5) < 0.01  # above every reference score
    assert counter.pvalue_then_add(-5.0, 0.5) > 0.99


def test_martingale_is_fair_at_an_uninformative_pvalue_and_grows_on_small_ones() -> None:
    m = ChangePointMixture()
    for _ in range(5):
        assert m.update(0.5) == pytest.approx(1.0)  # every bet pays exactly 1 at p = 1/2
    for _ in range(12):
        m.update(0.0)
    assert m.value > 100
    # Mean one under uniform p: the integral of each betting function over [0, 1] is 1.
    grid = (np.arange(10_000) + 0.5) / 10_000
    for k in m.kappas:
        assert float(np.mean(1 + k * (1 - 2 * grid))) == pytest.approx(1.0)


def test_a_long_quiet_stream_does_not_bury_a_later_change() -> None:
    m = ChangePointMixture()
    quiet = 20_000
    for p in np.random.default_rng(0).random(quiet).tolist():
        m.update(p)
    assert m.value >= 1 / (quiet + 1)  # the starts not reached yet still hold their weight
    rows = 0
    while m.value < 100:
        m.update(0.0)
        rows += 1
    # The start at the change alone, s = quiet + 1, weight w_s = 1/(s(s+1)), k = 1 doubling per
    # row, a quarter of the capital: w_s 2^d / 4 >= 100 once 2^d >= 400 s (s+1), d = 38.
    assert rows <= 38


def test_alarm_is_raised_once_and_stays() -> None:
    test = ExchangeabilityTest(np.linspace(0, 1, 200), 0.9, 0.1, alpha=0.01, seed=0)
    raised = [test.observe(2.0) for _ in range(40)]
    assert raised.count(True) == 1
    assert test.shifted and test.snapshot().status == "shifted"
    assert test.snapshot().martingale >= 100
    test.observe(float("nan"))  # skipped, not counted
    assert test.tested == 40


def test_clopper_pearson_ends_and_coverage() -> None:
    assert clopper_pearson(0, 0, 0.05) == (0.0, 1.0)
    lo, hi = clopper_pearson(0, 20, 0.05)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 20))
    # Exact coverage is at least 1 - alpha at every rate: check a few by summing the binomial.
    for rate in (0.05, 0.2, 0.5):
        n = 60
        cover = sum(
            stats.binom.pmf(k, n, rate)
            for k in range(n + 1)
            if clopper_pearson(k, n, 0.05)[0] <= rate <= clopper_pearson(k, n, 0.05)[1]
        )
        assert cover >= 0.95


def test_window_counts_referrals_of_the_last_rows_only() -> None:
    test = ExchangeabilityTest(np.linspace(0, 1, 100), 0.5, 0.5, window=10, seed=0)
    for s in [0.9] * 10 + [0.1] * 5:
        test.observe(s)
    snap = test.snapshot()
    assert snap.window_rows == 10 and snap.window_referral_rate == 0.5
    assert snap.window_band[0] < 0.5 < snap.window_band[1] and snap.referral_rate_in_band


def test_no_false_alarms_on_heldout_fashion_mnist_in_shuffled_order() -> None:
    """Held-out Fashion-MNIST uncertainty (the shipped model's stored reference scores, computed
    from its 5,000 held-out images) split at random into a reference part and a live stream, in
    shuffled order, over many seeded streams."""
    ref = load_reference(FASHION, read_manifest(FASHION))
    assert ref is not None
    alpha, streams, length = 0.01, 600, 500
    alarms = 0
    for seed in range(streams):
        scores = np.random.default_rng(seed).permutation(ref.scores)
        test = ExchangeabilityTest(
            scores[length:], ref.threshold, ref.referral_rate, alpha, seed=seed
        )
        for s in scores[:length].tolist():
            test.observe(s)
        alarms += test.shifted
    # Ville: each stream alarms with probability <= alpha, independently across seeds, so the
    # count is at most Binomial(600, 0.01): mean 6, sd sqrt(600 * 0.01 * 0.99) = 2.44.
    # Three standard deviations above the mean: 6 + 7.3 -> at most 13 alarms.
    assert alarms <= 13

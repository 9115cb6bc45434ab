"""An online test that live uncertainty scores are still exchangeable with the reference scores.

Pure maths (numpy and scipy only). The calibrated threshold's guarantee assumes live traffic is
exchangeable with the held-out rows it was calibrated on; this module tests that assumption one
score at a time, with a false-alarm probability bounded by alpha over the whole stream.

Conformal p-values. The reference scores come first in the sequence, then each live score. Live
score s_t gets the smoothed conformal p-value against every score before it *and itself*:

    p_t = (#{earlier scores > s_t} + theta_t * (#{earlier scores == s_t} + 1)) / (n_seen + 1)

with theta_t uniform on [0, 1]. Under exchangeability of the whole sequence these p-values are
independent and uniform on [0, 1] (Vovk, Gammerman and Shafer, "Algorithmic Learning in a Random
World", ch. 7), and small p-values mean larger uncertainty than before: the test is one-sided,
towards the drift that voids the threshold's guarantee. Ranking against a *fixed* reference set
instead would give p-values that are only uniform on average over reference sets, and a long
stream could then drift the martingale up with no shift at all; hence each live score joins the
pool it is ranked against.

Scores are ranked by bin: the bin edges are (at most MAX_BINS quantiles of) the reference
scores. A bin index is a fixed function of the score, so it is itself a valid score and the
p-values above stay exactly uniform; ties inside a bin are broken by theta. A Fenwick tree keeps
the counts, so a rank costs O(log bins) however long the stream.

Test martingale. Betting functions f_k(p) = 1 + k (1 - 2p), k in KAPPAS, each of mean 1
under a uniform p, so they only bet that p-values are small; mixed over the strengths and over
the step at which a change might start (ChangePointMixture), in the spirit of the conformal
change-point martingales of Vovk et al. ("Retrain or not retrain: conformal test martingales
for change-point detection", 2021). M_t is a nonnegative martingale from M_0 = 1 under
exchangeability, so by Ville's inequality P(sup_t M_t >= 1/alpha) <= alpha: an alarm at
M_t >= 1/alpha is false with probability at most alpha, however long the stream runs. After the
alarm the martingale is frozen (the alarm is sticky, and a product of bets over a long shift
would overflow a float).

Beside it, a windowed referral rate (the last `window` tested scores over the threshold) with its
two-sided Clopper-Pearson interval at level 1 - alpha, to compare with the calibrated referral
rate. The interval is an indicator only: it is re-read at every look, so it has no stream-wide
guarantee; the status comes from the martingale alone.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

MAX_BINS = 2048  # bin edges kept from the reference: ranks at 1/2048 resolution are plenty
KAPPAS = (0.25, 0.5, 0.75, 1.0)  # betting strengths: f_k(p) = 1 + k (1 - 2p)


class RankCounter:
    """Counts of binned scores in a Fenwick tree: how many seen scores are above a new one."""

    def __init__(self, reference: NDArray[np.floating], max_bins: int = MAX_BINS) -> None:
        ref = np.sort(np.asarray(reference, np.float64))
        if len(ref) == 0 or not np.all(np.isfinite(ref)):
            raise ValueError("reference scores must be a non-empty set of finite numbers")
        edges = np.unique(ref)
        if len(edges) > max_bins:
            # ref is sorted: evenly spaced order statistics are its quantiles, read by index.
            edges = np.unique(ref[np.linspace(0, len(ref) - 1, max_bins).round().astype(int)])
        self.edges: list[float] = edges.tolist()
        self.size = len(self.edges) + 1  # bin i holds (edges[i-1], edges[i]]; the last, above all
        bins = np.searchsorted(edges, ref, side="left")
        counts = np.bincount(bins, minlength=self.size)
        self._counts: list[int] = counts.tolist()
        self.total = int(counts.sum())
        # Fenwick node i (1-based) holds the counts of bins i - lowbit(i) .. i - 1: built from
        # prefix sums in one pass rather than by adding the reference one score at a time.
        prefix = np.r_[0, np.cumsum(counts)]
        i = np.arange(1, self.size + 1)
        self._tree: list[int] = [0, *(prefix[i] - prefix[i - (i & -i)]).tolist()]

    def bin_of(self, score: float) -> int:
        return bisect_left(self.edges, score)

    def _add(self, b: int, count: int) -> None:
        self._counts[b] += count
        self.total += count
        i = b + 1
        while i <= self.size:
            self._tree[i] += count
            i += i & -i

    def at_most(self, b: int) -> int:
        """How many counted scores fall in bins 0..b."""
        s, i = 0, b + 1
        while i > 0:
            s += self._tree[i]
            i -= i & -i
        return s

    def pvalue_then_add(self, score: float, theta: float) -> float:
        """The smoothed conformal p-value of `score` (see the module docstring), then count it."""
        b = self.bin_of(score)
        greater = self.total - self.at_most(b)
        p = (greater + theta * (self._counts[b] + 1)) / (self.total + 1)
        self._add(b, 1)
        return p


class ChangePointMixture:
    """One-sided test martingale over p-values (small p = evidence), mixed over start times.

    For a change that starts at step s, the martingale M_s,t = prod_{r=s..t} f_k(p_r) bets from s
    on. Not knowing s, it holds all of them at once with prior weights w_s = 1/(s(s+1)) (which
    sum to 1), and the strengths k in KAPPAS with equal weights:

        M_t = mean_k [ sum_{s<=t} w_s M^k_s,t ] + sum_{s>t} w_s

    (a start not reached yet is a bet of 1). A mixture of test martingales is one, so Ville's
    inequality applies to M_t. The inner sum obeys A_t = (A_{t-1} + w_t) f(p_t): O(1) a step.
    A long quiet stream cannot bury the statistic (M_t >= 1/(t+1), and a change at s is found as
    soon as M_s,t passes 1/(alpha w_s), about 2 log s nats later than one at the start), where a
    single running product would first have to climb back from wherever it drifted.
    """

    def __init__(self, kappas: tuple[float, ...] = KAPPAS) -> None:
        if not kappas or not all(0.0 < k <= 1.0 for k in kappas):
            raise ValueError("kappas must lie in (0, 1]")
        self.kappas = kappas
        self.started = [0.0] * len(kappas)  # A_t for each strength
        self.steps = 0
        self.value = 1.0
        self.peak = 1.0

    def update(self, p: float) -> float:
        self.steps = t = self.steps + 1
        w = 1.0 / (t * (t + 1.0))
        bet = 1.0 - 2.0 * p
        self.started = [
            (a + w) * (1.0 + k * bet) for a, k in zip(self.started, self.kappas, strict=True)
        ]
        self.value = sum(self.started) / len(self.kappas) + 1.0 / (t + 1.0)
        if self.value > self.peak:
            self.peak = self.value
        return self.value


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """Two-sided (1 - alpha) Clopper-Pearson interval for a binomial proportion k / n."""
    if n == 0:
        return 0.0, 1.0
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class WatchSnapshot:
    """What an operator reads: one look at the test."""

    status: str  # "holding" or "shifted"
    martingale: float
    martingale_peak: float
    alarm_level: float  # 1 / alpha
    alpha: float
    tested: int  # scores fed to the martingale
    window_rows: int
    window_referral_rate: float | None
    window_band: tuple[float, float]  # Clopper-Pearson interval of the windowed rate
    calibrated_referral_rate: float
    referral_rate_in_band: bool  # the calibrated rate lies inside the interval


class ExchangeabilityTest:
    """Reference scores + a stream of live scores → a martingale, an alarm and a referral window.

    `observe(score)` returns True exactly once: on the step the martingale first reaches
    1 / alpha. The alarm then stays raised until a new test is started.
    """

    def __init__(
        self,
        reference: NDArray[np.floating],
        threshold: float,
        calibrated_referral_rate: float,
        alpha: float = 0.01,
        window: int = 500,
        seed: int | None = None,
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.alpha = alpha
        self.threshold = threshold
        self.calibrated_referral_rate = calibrated_referral_rate
        self.ranks = RankCounter(reference)
        self.martingale = ChangePointMixture()
        self.rng = random.Random(seed)
        self.tested = 0
        self.shifted = False
        self._level = 1.0 / alpha
        self._window: deque[bool] = deque(maxlen=window)
        self._window_referred = 0

    def observe(self, score: float) -> bool:
        """Feed one score (NaN is skipped); True on the step the alarm is raised."""
        if math.isnan(score):
            return False
        self.tested += 1
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self._window_referred -= 1
        referred = score > self.threshold
        window.append(referred)
        self._window_referred += referred
        if self.shifted:  # the alarm is sticky; the martingale stays at its alarm value
            return False
        p = self.ranks.pvalue_then_add(score, self.rng.random())
        if self.martingale.update(p) >= self._level:
            self.shifted = True
            return True
        return False

    def snapshot(self) -> WatchSnapshot:
        n, k = len(self._window), self._window_referred
        lo, hi = clopper_pearson(k, n, self.alpha)
        return WatchSnapshot(
            status="shifted" if self.shifted else "holding",
            martingale=self.martingale.value,
            martingale_peak=self.martingale.peak,
            alarm_level=self._level,
            alpha=self.alpha,
            tested=self.tested,
            window_rows=n,
            window_referral_rate=k / n if n else None,
            window_band=(lo, hi),
            calibrated_referral_rate=self.calibrated_referral_rate,
            referral_rate_in_band=lo <= self.calibrated_referral_rate <= hi,
        )

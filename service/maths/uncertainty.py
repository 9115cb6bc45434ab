"""Pure uncertainty maths: MC samples in, predictive moments and uncertainty measures out.

No torch here. Every function takes numpy arrays shaped (T, N, D) for samples, T being the
number of stochastic forward passes, N the rows and D the outputs, and follows Gal &
Ghahramani, "Dropout as a Bayesian Approximation" (ICML 2016) and Gal's thesis (ch. 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

FloatArray = NDArray[np.float64]

# Probabilities are clipped here before taking logs, so that one-hot samples give 0, not NaN.
_EPS = 1e-12

REGRESSION_METRICS = ("std", "variance", "epistemic_std")
CLASSIFICATION_METRICS = ("predictive_entropy", "mutual_information", "variation_ratio")


# ---------------------------------------------------------------------------- regression


@dataclass(frozen=True)
class RegressionMoments:
    """Predictive moments of an MC dropout regression, all in the target's units."""

    mean: FloatArray  # (N, D)
    epistemic_variance: FloatArray  # (N, D): spread of the T passes
    aleatoric_variance: FloatArray  # (N, D): observation noise, 1/tau
    variance: FloatArray  # (N, D): total predictive variance

    @property
    def std(self) -> FloatArray:
        return np.sqrt(self.variance)


def regression_moments(samples: NDArray[np.floating], tau: float) -> RegressionMoments:
    """Mean and predictive variance tau^-1 + (1/T) sum y_t^2 - mean^2 (the paper's eq. for Var)."""
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    s = np.asarray(samples, dtype=np.float64)
    t = s.shape[0]
    # np.add.reduce is what np.mean runs, without its Python wrapper, whose cost counts on the
    # serving path where every request summarises its samples (docs/performance.md).
    mean = np.add.reduce(s, axis=0) / t
    # Computed as the mean squared deviation rather than E[y^2] - mean^2: the same quantity,
    # without the cancellation that makes the textbook form negative for large means.
    dev = s - mean
    epistemic = np.add.reduce(np.multiply(dev, dev, out=dev), axis=0) / t
    aleatoric = np.full_like(mean, 1.0 / tau)
    return RegressionMoments(mean, epistemic, aleatoric, epistemic + aleatoric)


def tau_from_weight_decay(
    weight_decay: float, keep_prob: float, length_scale: float, n_train: int
) -> float:
    """tau = p l^2 / (2 N lambda): the model precision implied by a weight decay."""
    return keep_prob * length_scale**2 / (2.0 * n_train * weight_decay)


def weight_decay_from_tau(tau: float, keep_prob: float, length_scale: float, n_train: int) -> float:
    """lambda = p l^2 / (2 N tau): the weight decay that gives a model precision tau."""
    return keep_prob * length_scale**2 / (2.0 * n_train * tau)


def rmse(mean: NDArray[np.floating], y: NDArray[np.floating]) -> float:
    """Root mean squared error of the predictive mean."""
    diff = np.asarray(mean, np.float64) - np.asarray(y, np.float64).reshape(np.shape(mean))
    return float(np.sqrt(np.mean(diff**2)))


def mc_log_likelihood(samples: NDArray[np.floating], y: NDArray[np.floating], tau: float) -> float:
    """The paper's average test log-likelihood per point.

    logsumexp_t(-tau/2 ||y - y_t||^2) - log T - (D/2) log 2pi + (D/2) log tau, averaged over rows.
    """
    s = np.asarray(samples, dtype=np.float64)
    t, n, d = s.shape
    yy = np.asarray(y, dtype=np.float64).reshape(1, n, d)
    sq = np.sum((yy - s) ** 2, axis=2)  # (T, N)
    ll = logsumexp(-0.5 * tau * sq, axis=0) - math.log(t)
    ll += -0.5 * d * math.log(2 * math.pi) + 0.5 * d * math.log(tau)
    return float(np.mean(ll))


def fit_tau(samples: NDArray[np.floating], y: NDArray[np.floating]) -> float:
    """tau maximising the MC log-likelihood of held-out rows (a bounded 1-D search over log tau).

    samples: (T, N, D) MC outputs in target units; y: (N, D) targets. The search spans 24 nats
    around 1/var(y), far wider than any tau a fitted model reaches.
    """

    def neg_ll(log_tau: float) -> float:
        return -mc_log_likelihood(samples, y, math.exp(log_tau))

    scale = float(np.var(np.asarray(y, np.float64))) or 1.0
    res = minimize_scalar(
        neg_ll, bounds=(-math.log(scale) - 12, -math.log(scale) + 12), method="bounded"
    )
    return float(math.exp(res.x))


# ------------------------------------------------------------------------ classification


def softmax(logits: NDArray[np.floating], axis: int = -1) -> FloatArray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    out: FloatArray = e / e.sum(axis=axis, keepdims=True)
    return out


@dataclass(frozen=True)
class ClassificationMeasures:
    """Predictive distribution and uncertainty of an MC dropout classifier."""

    probabilities: FloatArray  # (N, K): mean softmax over the T passes
    variance: FloatArray  # (N, K): per-class variance of the softmax over the T passes
    label: NDArray[np.int64]  # (N,)
    predictive_entropy: FloatArray  # (N,) in nats
    mutual_information: FloatArray  # (N,) in nats (BALD)
    variation_ratio: FloatArray  # (N,)


def _entropy(p: FloatArray, axis: int = -1) -> FloatArray:
    out: FloatArray = -np.sum(p * np.log(np.clip(p, _EPS, 1.0)), axis=axis)
    return np.maximum(out, 0.0)


def classification_measures(prob_samples: NDArray[np.floating]) -> ClassificationMeasures:
    """Mean probabilities, predictive entropy, mutual information and variation ratio.

    prob_samples: (T, N, K) softmax outputs of the T passes.
    - predictive entropy H[mean_t p_t];
    - mutual information H[mean_t p_t] - mean_t H[p_t] (epistemic part, BALD);
    - variation ratio 1 - f/T, f the count of the modal label among the T argmaxes.
    """
    p = np.asarray(prob_samples, dtype=np.float64)
    t = p.shape[0]
    mean = p.mean(axis=0)
    variance = p.var(axis=0)
    entropy = _entropy(mean)
    expected_entropy = _entropy(p).mean(axis=0)
    mutual_information = np.maximum(entropy - expected_entropy, 0.0)
    votes = p.argmax(axis=2)  # (T, N)
    k = p.shape[2]
    counts = np.zeros((p.shape[1], k), dtype=np.int64)
    for c in range(k):  # K is small; this avoids a (T, N, K) one-hot temporary
        counts[:, c] = np.sum(votes == c, axis=0)
    variation_ratio = 1.0 - counts.max(axis=1) / t
    return ClassificationMeasures(
        probabilities=mean,
        variance=variance,
        label=mean.argmax(axis=1).astype(np.int64),
        predictive_entropy=entropy,
        mutual_information=mutual_information,
        variation_ratio=variation_ratio,
    )


def accuracy(probabilities: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == np.asarray(labels)))


def nll(probabilities: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """Mean negative log-likelihood of the true labels under the predictive distribution."""
    p = np.asarray(probabilities, np.float64)
    picked = p[np.arange(p.shape[0]), np.asarray(labels)]
    return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))


def brier(probabilities: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """Mean over rows of sum_k (p_k - 1[y=k])^2."""
    p = np.asarray(probabilities, np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), np.asarray(labels)] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


class StreamingRegressionScore:
    """RMSE of the MC mean and the paper's test log-likelihood, fed T samples chunk by chunk.

    Holds O(N) state (running sum and running logsumexp per row), so T = 10,000 passes over
    thousands of rows never need a (T, N) array. Matches `rmse` and `mc_log_likelihood` on the
    concatenated samples.
    """

    def __init__(self, y: NDArray[np.floating], tau: float) -> None:
        if tau <= 0:
            raise ValueError(f"tau must be positive, got {tau}")
        self.y = np.asarray(y, np.float64).reshape(len(y), -1)  # (N, D)
        self.tau = float(tau)
        self.count = 0
        self._sum = np.zeros_like(self.y)
        self._lse = np.full(len(self.y), -np.inf)

    def update(self, samples: NDArray[np.floating]) -> None:
        """samples: (t, N, D) or (t, N), in the target's units."""
        s = np.asarray(samples, np.float64).reshape(-1, *self.y.shape)
        self.count += s.shape[0]
        self._sum += s.sum(axis=0)
        sq = np.sum((self.y[None] - s) ** 2, axis=2)  # (t, N)
        self._lse = np.logaddexp(self._lse, logsumexp(-0.5 * self.tau * sq, axis=0))

    @property
    def mean(self) -> FloatArray:
        if self.count == 0:
            raise ValueError("no samples yet")
        out: FloatArray = self._sum / self.count
        return out

    def rmse(self) -> float:
        return rmse(self.mean, self.y)

    def log_likelihood(self) -> float:
        d = self.y.shape[1]
        ll = self._lse - math.log(self.count)
        ll += -0.5 * d * math.log(2 * math.pi) + 0.5 * d * math.log(self.tau)
        return float(np.mean(ll))


def confidence(probabilities: NDArray[np.floating]) -> FloatArray:
    """The probability of the predicted class, max_k p_k."""
    out: FloatArray = np.max(np.asarray(probabilities, np.float64), axis=1)
    return out


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins (lo, hi]: counts, mean confidence and accuracy per bin."""

    edges: FloatArray  # (B + 1,)
    count: NDArray[np.int64]  # (B,)
    confidence: FloatArray  # (B,), NaN for an empty bin
    accuracy: FloatArray  # (B,), NaN for an empty bin


def reliability_bins(
    probabilities: NDArray[np.floating], labels: NDArray[np.integer], bins: int = 15
) -> ReliabilityBins:
    conf = confidence(probabilities)
    correct = (np.argmax(probabilities, axis=1) == np.asarray(labels)).astype(np.float64)
    # Bins are (lo, hi] as in Guo et al. (2017); a confidence of exactly 0 joins the first bin.
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=bins) / count
        mean_acc = np.bincount(idx, weights=correct, minlength=bins) / count
    return ReliabilityBins(np.linspace(0.0, 1.0, bins + 1), count, mean_conf, mean_acc)


def expected_calibration_error(
    probabilities: NDArray[np.floating], labels: NDArray[np.integer], bins: int = 15
) -> float:
    """ECE = sum_b (n_b / n) |accuracy_b - confidence_b| over equal-width confidence bins."""
    rb = reliability_bins(probabilities, labels, bins)
    filled = rb.count > 0
    gaps = np.abs(rb.accuracy[filled] - rb.confidence[filled])
    return float(np.sum(rb.count[filled] * gaps) / np.sum(rb.count))

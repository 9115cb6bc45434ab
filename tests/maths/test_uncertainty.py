"""The pure maths against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.maths import uncertainty


def test_regression_moments_match_the_paper_formula() -> None:
    samples = np.array([[[1.0]], [[3.0]], [[2.0]], [[6.0]]])  # T=4, N=1, D=1
    m = uncertainty.regression_moments(samples, tau=2.0)
    assert m.mean[0, 0] == pytest.approx(3.0)
    # (1/T) sum y^2 - mean^2 = (1 + 9 + 4 + 36)/4 - 9 = 3.5
    assert m.epistemic_variance[0, 0] == pytest.approx(3.5)
    assert m.aleatoric_variance[0, 0] == pytest.approx(0.5)
    assert m.variance[0, 0] == pytest.approx(4.0)
    assert m.std[0, 0] == pytest.approx(2.0)


def test_tau_and_weight_decay_are_inverse() -> None:
    lam = uncertainty.weight_decay_from_tau(tau=0.5, keep_prob=0.9, length_scale=1e-2, n_train=1000)
    assert lam == pytest.approx(0.9 * 1e-4 / (2 * 1000 * 0.5))
    assert uncertainty.tau_from_weight_decay(lam, 0.9, 1e-2, 1000) == pytest.approx(0.5)


def test_mc_log_likelihood_with_one_sample_is_the_gaussian_log_density() -> None:
    y = np.array([1.0, -0.5])
    s = np.array([[[0.2], [0.0]]])  # T=1
    tau = 3.0
    expected = np.mean(
        [
            -0.5 * math.log(2 * math.pi / tau) - 0.5 * tau * (yi - si) ** 2
            for yi, si in [(1.0, 0.2), (-0.5, 0.0)]
        ]
    )
    assert uncertainty.mc_log_likelihood(s, y, tau) == pytest.approx(expected)


def test_mc_log_likelihood_is_log_mean_of_densities() -> None:
    s = np.array([[[0.0]], [[2.0]]])  # T=2 samples for one point
    y, tau = np.array([1.0]), 1.0
    dens = [math.exp(-0.5 * tau * 1.0) * math.sqrt(tau / (2 * math.pi))] * 2
    assert uncertainty.mc_log_likelihood(s, y, tau) == pytest.approx(math.log(sum(dens) / 2))


def test_rmse() -> None:
    assert uncertainty.rmse(np.array([[1.0], [3.0]]), np.array([0.0, 3.0])) == pytest.approx(
        math.sqrt(0.5)
    )


def test_classification_unanimous_one_hot_has_no_uncertainty() -> None:
    p = np.tile(np.array([0.0, 1.0, 0.0]), (5, 1, 1))  # T=5, N=1, K=3
    c = uncertainty.classification_measures(p)
    assert c.label[0] == 1
    assert c.predictive_entropy[0] == pytest.approx(0.0, abs=1e-9)
    assert c.mutual_information[0] == pytest.approx(0.0, abs=1e-9)
    assert c.variation_ratio[0] == 0.0
    assert np.allclose(c.variance, 0.0)


def test_classification_uniform_probabilities_are_aleatoric_only() -> None:
    k = 4
    p = np.full((6, 1, k), 1.0 / k)
    c = uncertainty.classification_measures(p)
    assert c.predictive_entropy[0] == pytest.approx(math.log(k))
    assert c.mutual_information[0] == pytest.approx(0.0, abs=1e-9)  # every pass agrees


def test_classification_disagreeing_one_hots_are_epistemic() -> None:
    p = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 0.0]], [[0.0, 1.0]]])
    c = uncertainty.classification_measures(p)
    assert c.probabilities[0] == pytest.approx([0.5, 0.5])
    assert c.predictive_entropy[0] == pytest.approx(math.log(2))
    assert c.mutual_information[0] == pytest.approx(math.log(2))  # all of it is disagreement
    assert c.variation_ratio[0] == pytest.approx(0.5)
    assert c.variance[0] == pytest.approx([0.25, 0.25])


def test_classification_mixed_case_by_hand() -> None:
    p = np.array([[[0.9, 0.1]], [[0.6, 0.4]], [[0.3, 0.7]]])
    c = uncertainty.classification_measures(p)
    mean = np.array([0.6, 0.4])
    h = -np.sum(mean * np.log(mean))
    eh = np.mean([-np.sum(r * np.log(r)) for r in p[:, 0, :]])
    assert c.predictive_entropy[0] == pytest.approx(h)
    assert c.mutual_information[0] == pytest.approx(h - eh)
    assert c.variation_ratio[0] == pytest.approx(1 - 2 / 3)


def test_accuracy_nll_brier_by_hand() -> None:
    probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    labels = np.array([0, 0])
    assert uncertainty.accuracy(probs, labels) == 0.5
    assert uncertainty.nll(probs, labels) == pytest.approx(-(math.log(0.8) + math.log(0.4)) / 2)
    assert uncertainty.brier(probs, labels) == pytest.approx(
        ((0.2**2 + 0.2**2) + (0.6**2 + 0.6**2)) / 2
    )

"""The adaptive dropout grid and the continuous tau fit, on objectives known in closed form."""

from __future__ import annotations

import math

import numpy as np

from service.training.tuning.search import (
    Axis,
    choose,
    fit_tau,
    gaussian_log_likelihood_of_tau,
    mc_log_likelihood_of_tau,
    next_points,
)

AXIS = Axis(1e-3, 0.5)


def _run(objective: object, start: list[float], budget: int) -> dict[float, float]:
    f = objective if callable(objective) else None
    assert f is not None
    scores = {p: f(p) for p in start}
    while len(scores) < budget:
        new = next_points(scores, AXIS, min(2, budget - len(scores)))
        if not new:
            break
        scores.update({p: f(p) for p in new})
    return scores


def test_a_winning_edge_widens_the_grid_until_the_best_rate_is_interior() -> None:
    peak = 0.2  # the first grid's top edge (0.02) wins, ten times below the peak
    scores = _run(lambda p: -((math.log(p) - math.log(peak)) ** 2), [0.005, 0.01, 0.02], 30)
    first = choose({p: scores[p] for p in (0.005, 0.01, 0.02)}, AXIS)
    assert first.edge == "high" and first.why == "budget"
    c = choose(scores, AXIS)
    assert c.edge is None
    # Refining stops once neighbours are within min_ratio = 1.25 of each other.
    assert peak / 1.25 < c.value < peak * 1.25
    assert max(scores) > 0.02  # the range really grew past the first edge


def test_an_optimum_beyond_a_hard_bound_is_reported_as_that_edge() -> None:
    scores = _run(lambda p: p, [0.01, 0.05], 30)
    c = choose(scores, AXIS)
    assert (c.value, c.edge, c.why) == (0.5, "high", "hard bound")


def test_a_budget_spent_on_an_edge_says_so() -> None:
    scores = _run(lambda p: -p, [0.05, 0.1, 0.2], 4)
    c = choose(scores, AXIS)
    assert c.edge == "low" and c.why == "budget" and len(scores) == 4


def test_tau_fit_widens_a_bracket_whose_edge_wins_and_finds_the_closed_form_optimum() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(0.0, 0.1, size=500)  # residuals of a perfect mean: tau* = 1 / mean(y^2)
    ll = gaussian_log_likelihood_of_tau(np.zeros_like(y), np.zeros_like(y), y)
    fit = fit_tau(ll, 0.1, 1.0)
    assert len(fit.brackets) > 1 and fit.edge is None
    assert math.isclose(fit.tau, 1.0 / np.mean(y**2), rel_tol=1e-3)


def test_mc_likelihood_with_one_pass_is_the_gaussian_one() -> None:
    rng = np.random.default_rng(2)
    mean, y = rng.normal(size=50), rng.normal(size=50)
    mc = mc_log_likelihood_of_tau(mean[None, :], y)
    gauss = gaussian_log_likelihood_of_tau(mean, np.zeros(50), y)
    for tau in (0.3, 2.0, 40.0):
        assert math.isclose(mc(tau), gauss(tau), rel_tol=1e-12)

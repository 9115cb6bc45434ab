"""ECE, Brier, NLL and AURC against values worked out by hand on tiny inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.maths import uncertainty
from service.maths.selective import aurc, retained_risk, risk_coverage


def test_ece_with_one_row_per_bin() -> None:
    # Confidences 0.9, 0.6, 0.7 fall in bins 13, 8 or 9, 10 of 15; correct, wrong, correct.
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 1])
    # (|1 - 0.9| + |0 - 0.6| + |1 - 0.7|) / 3
    assert uncertainty.expected_calibration_error(p, y) == pytest.approx((0.1 + 0.6 + 0.3) / 3)


def test_ece_averages_inside_a_bin() -> None:
    # 0.91 and 0.92 share the bin (14/15, 1]: accuracy 1/2, confidence 0.915 -> |0.5 - 0.915|.
    p = np.array([[0.91, 0.09], [0.92, 0.08]])
    assert uncertainty.expected_calibration_error(p, np.array([0, 1])) == pytest.approx(0.415)
    rb = uncertainty.reliability_bins(p, np.array([0, 1]))
    assert rb.count.tolist() == [0] * 13 + [2, 0]


def test_brier_and_nll_by_hand() -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8]])
    y = np.array([0, 0])
    # Row 1: 0.1^2 + 0.1^2 = 0.02; row 2: 0.8^2 + 0.8^2 = 1.28.
    assert uncertainty.brier(p, y) == pytest.approx((0.02 + 1.28) / 2)
    assert uncertainty.nll(p, y) == pytest.approx(-(math.log(0.9) + math.log(0.2)) / 2)


def test_aurc_by_hand() -> None:
    # Retained from least uncertain: losses 0, 1, 0, 1 -> risks 0, 1/2, 1/3, 1/2.
    u = np.array([0.4, 0.1, 0.3, 0.2])
    loss = np.array([1.0, 0.0, 0.0, 1.0])
    assert aurc(u, loss) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)
    # root=True averages sqrt(risk): the RMSE curve for squared errors.
    assert aurc(u, loss, root=True) == pytest.approx(
        (0 + math.sqrt(1 / 2) + math.sqrt(1 / 3) + math.sqrt(1 / 2)) / 4
    )


def test_aurc_breaks_ties_in_expectation() -> None:
    # Two tied rows (losses 1 and 0) count 1/2 each whatever their order: risks 1/2, 1/2, 1/3.
    for loss in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]):
        assert aurc(np.array([0.0, 0.0, 1.0]), np.array(loss)) == pytest.approx(4 / 9)
    # A constant uncertainty carries no ranking: the curve is flat at the overall risk.
    rc = risk_coverage(np.zeros(4), np.array([1.0, 0.0, 0.0, 1.0]))
    assert rc.risk == pytest.approx([0.5] * 4)


def test_retained_risk_refers_the_most_uncertain_first() -> None:
    u = np.arange(10, dtype=np.float64)
    loss = np.array([0.0] * 8 + [1.0, 1.0])
    table = retained_risk(u, loss, (0.0, 0.1, 0.2, 0.3))
    assert table == [(0.0, 10, 0.2), (0.1, 9, pytest.approx(1 / 9)), (0.2, 8, 0.0), (0.3, 7, 0.0)]


def test_risk_coverage_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="same length"):
        risk_coverage(np.zeros(3), np.zeros(2))

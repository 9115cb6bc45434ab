"""AUROC and AUPR of OOD detection, and the image shifts."""

from __future__ import annotations

import numpy as np
import pytest

from service.maths.ood import aupr, auroc, referral_rate
from service.maths.shift import noise_images, shifted, upscaled_digits


def test_auroc_is_the_share_of_ood_in_pairs_ranked_above() -> None:
    rng = np.random.default_rng(0)
    u_in, u_ood = rng.normal(size=60).round(1), (rng.normal(size=40) + 1).round(1)
    wins = (u_ood[:, None] > u_in[None, :]).sum() + 0.5 * (u_ood[:, None] == u_in[None, :]).sum()
    assert auroc(u_in, u_ood) == pytest.approx(wins / (60 * 40))
    assert auroc(np.zeros(3), np.ones(2)) == 1.0 and auroc(np.ones(3), np.zeros(2)) == 0.0


def test_aupr_by_hand_and_at_the_extremes() -> None:
    # Ranked: 0.9 ood, 0.8 in, 0.7 ood, 0.1 in -> precisions at the OOD rows 1/1 and 2/3.
    assert aupr(np.array([0.8, 0.1]), np.array([0.9, 0.7])) == pytest.approx((1 + 2 / 3) / 2)
    assert aupr(np.zeros(5), np.ones(5)) == 1.0
    # All tied: one step at the pooled precision, the OOD share.
    assert aupr(np.ones(6), np.ones(2)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least one"):
        aupr(np.zeros(0), np.ones(2))


def test_non_finite_scores_rank_highest_and_are_referred() -> None:
    assert auroc(np.array([0.1, 0.2]), np.array([np.inf, np.nan])) == 1.0
    assert referral_rate(np.array([0.1, 0.5, np.nan, np.inf]), 0.3) == 0.75


def test_shifts_keep_shape_and_range_and_zero_is_identity() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 1, 8, 8)).astype(float)
    assert np.array_equal(shifted(x, "rotate", 0, 255, rng), x)
    assert np.array_equal(shifted(x, "noise", 0, 255, rng), x)
    turned = shifted(x, "rotate", 90, 255, rng)
    assert turned.shape == x.shape and np.allclose(turned, np.rot90(x, 1, axes=(2, 3)))
    noisy = shifted(x, "noise", 0.5, 255, rng)
    assert noisy.min() >= 0 and noisy.max() <= 255 and not np.array_equal(noisy, x)
    with pytest.raises(ValueError, match="image inputs"):
        shifted(np.zeros((3, 4)), "rotate", 10, 255, rng)


def test_ood_image_makers() -> None:
    digits = np.full((2, 8, 8), 16.0)
    img = upscaled_digits(digits)
    assert img.shape == (2, 28, 28) and img.dtype == np.uint8
    assert img[:, 4:24, 4:24].min() == 255 and img[:, :4].max() == 0  # centred, black border
    noise = noise_images(500, 70.0, 90.0, np.random.default_rng(1))
    assert noise.shape == (500, 28, 28) and abs(float(noise.mean()) - 80) < 10  # clipping lifts it

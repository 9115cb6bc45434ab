"""The calibration watch detects out-of-distribution traffic to the shipped Fashion-MNIST model.

OOD images are made here, from scikit-learn's digits (upscaled to 28x28) and Gaussian noise,
and scored by the shipped model with the reference's own T; the in-distribution scores are the
model's stored held-out reference scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from service.artifacts.data import Dataset
from service.artifacts.manifest import read_manifest
from service.artifacts.reference import ReferenceScores, load_reference
from service.evaluation.heldout import score_mc
from service.maths.exchangeability import ExchangeabilityTest
from service.maths.shift import noise_images, upscaled_digits
from service.serving.model import load_model

FASHION = Path("models/fashion-mnist")
N_OOD = 60
STREAMS = 40
MAX_ROWS = 3000


@pytest.fixture(scope="module")
def reference() -> ReferenceScores:
    ref = load_reference(FASHION, read_manifest(FASHION))
    assert ref is not None
    return ref


@pytest.fixture(scope="module")
def ood_scores(reference: ReferenceScores) -> dict[str, np.ndarray]:
    model = load_model(FASHION, device="cpu")
    rng = np.random.default_rng(0)
    norm = model.manifest.normalization
    mean, std = norm.x_mean[0] / norm.input_scale, norm.x_std[0] / norm.input_scale
    digits = load_digits().images
    sets = {
        "digits": upscaled_digits(digits[rng.choice(len(digits), N_OOD, replace=False)]),
        "noise": noise_images(N_OOD, mean, std, rng),
    }
    out = {}
    for name, images in sets.items():
        ds = Dataset(images.reshape(N_OOD, -1).astype(np.float64), np.zeros(N_OOD))
        out[name] = score_mc(model, ds, reference.samples, seed=0).uncertainty[reference.metric]
    return out


def rows_to_alarm(ref: ReferenceScores, ood: np.ndarray, share: float, seed: int) -> int:
    """One stream: a random 4,000 reference scores; live rows are OOD with probability `share`,
    else the remaining held-out scores in shuffled order. Rows fed until the alarm."""
    rng = np.random.default_rng(seed)
    scores = rng.permutation(ref.scores)
    test = ExchangeabilityTest(scores[:4000], ref.threshold, ref.referral_rate, 0.01, seed=seed)
    held_out = iter(np.resize(scores[4000:], MAX_ROWS).tolist())
    for row in range(1, MAX_ROWS + 1):
        s = float(rng.choice(ood)) if rng.random() < share else next(held_out)
        if test.observe(s):
            return row
    return MAX_ROWS + 1


@pytest.mark.parametrize("name", ["digits", "noise"])
def test_ood_traffic_is_detected_within_a_bounded_number_of_rows(
    name: str, reference: ReferenceScores, ood_scores: dict[str, np.ndarray]
) -> None:
    pure = [rows_to_alarm(reference, ood_scores[name], 1.0, s) for s in range(STREAMS)]
    mixed = [rows_to_alarm(reference, ood_scores[name], 0.3, s) for s in range(STREAMS)]
    print(
        f"{name}: median rows to alarm {np.median(pure):g} (all OOD), "
        f"{np.median(mixed):g} (30% OOD)"
    )
    assert max(pure) <= MAX_ROWS and max(mixed) <= MAX_ROWS  # every stream alarms
    # All OOD: when every p-value is near 0, the strongest bet (k = 1) nearly doubles per row:
    # from the first start (weight 1/2, a quarter of the capital) M >= 2^t / 8 reaches 100 at
    # t = log2 800 = 9.6. 15 leaves room for OOD rows that rank among the held-out ones.
    assert np.median(pure) <= 15
    # 30% OOD: the k = 0.5 bet grows by 0.3 log 1.5 + 0.7 E[log(1 + 0.5 (1 - 2U))] = 0.122 -
    # 0.032 = 0.09 per row if OOD p-values were 0, so log 800 / 0.09 = 74 rows; bound near 4x.
    assert np.median(mixed) <= 280

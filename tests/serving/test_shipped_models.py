"""The shipped models: image inputs in every accepted shape, and calibrated manifests."""

from __future__ import annotations

import numpy as np
import pytest

from service.artifacts.manifest import read_manifest
from service.errors import InvalidInput
from service.serving.model import load_model
from tests.conftest import MODELS

FASHION = MODELS / "fashion-mnist"
REQUIRED_CALIBRATION = {"metric", "threshold", "delta", "coverage", "n", "sha256", "date"}
TARGETS = {"target_error", "target_rmse", "max_referral_rate"}


def test_fashion_images_nested_flat_and_channelless_give_the_same_prediction() -> None:
    model = load_model(FASHION, device="cpu")
    assert model.manifest.input_shape == [1, 28, 28]
    assert model.manifest.normalization.input_scale == pytest.approx(1 / 255)
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28)).astype(np.float64)
    nested = model.predict(pixels[:, None].tolist(), samples=8, seed=5)  # (N, 1, 28, 28) lists
    flat = model.predict(pixels.reshape(3, 784).tolist(), samples=8, seed=5)  # (N, 784)
    channelless = model.predict(pixels.tolist(), samples=8, seed=5)  # (N, 28, 28)
    for other in (flat, channelless):
        np.testing.assert_array_equal(nested.mean, other.mean)
        np.testing.assert_array_equal(nested.uncertainty, other.uncertainty)
    # Raw 0..255 pixels are scaled by the manifest's input_scale before normalisation.
    norm = model.manifest.normalization
    expected = (pixels[:, None] / 255.0 - norm.x_mean[0]) / norm.x_std[0]
    np.testing.assert_allclose(model.prepare(pixels.reshape(3, 784)), expected, rtol=1e-6)


def test_fashion_rejects_a_wrong_image_size() -> None:
    model = load_model(FASHION, device="cpu")
    with pytest.raises(InvalidInput, match=r"flat rows of 784 values"):
        model.prepare(np.zeros((2, 27, 27)))


def test_fashion_artifact_is_small() -> None:
    size = sum(p.stat().st_size for p in FASHION.iterdir())
    assert size < 5 * 2**20


@pytest.mark.parametrize("name", ["fashion-mnist", "digits", "diabetes"])
def test_shipped_models_are_calibrated(name: str) -> None:
    m = read_manifest(MODELS / name)
    cal = m.calibration
    assert cal is not None, f"{name}: threshold is still the training placeholder"
    assert set(cal) >= REQUIRED_CALIBRATION and TARGETS & set(cal)
    assert cal["metric"] == m.uncertainty_metric and cal["threshold"] == m.threshold

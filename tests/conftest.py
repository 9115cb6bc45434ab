"""Shared fixtures: tiny models written into tmp_path, so tests never depend on models/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


@pytest.fixture(scope="session")
def tiny_regression_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service.data import Dataset
    from service.training import TrainConfig, train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
    out = tmp_path_factory.mktemp("models") / "tiny_reg"
    cfg = TrainConfig(task="regression", name="tiny_reg", hidden=16, layers=1, epochs=5, tau=100.0)
    train(Dataset(x, y, ["a", "b", "c"], ["y"]), cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service.data import Dataset
    from service.training import TrainConfig, train

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float64) + (x[:, 2] > 1).astype(np.float64)
    out = tmp_path_factory.mktemp("models") / "tiny_clf"
    cfg = TrainConfig(task="classification", name="tiny_clf", hidden=16, layers=1, epochs=5)
    train(Dataset(x, y), cfg, out, progress=False)
    return out

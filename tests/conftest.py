"""Shared fixtures: tiny models written into tmp_path, so tests never depend on models/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


@pytest.fixture(scope="session", autouse=True)
def _referral_store_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every app a test builds records referrals under tmp, never in the working directory
    (tests that need their own store pass database_url/referral_spool explicitly)."""
    folder = tmp_path_factory.mktemp("referrals")
    saved = {k: os.environ.get(k) for k in ("MCDROP_DATABASE_URL", "MCDROP_REFERRAL_SPOOL")}
    os.environ["MCDROP_DATABASE_URL"] = f"sqlite:///{folder / 'referrals.db'}"
    os.environ["MCDROP_REFERRAL_SPOOL"] = str(folder / "spool.jsonl")
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_regression_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service.artifacts.data import Dataset
    from service.training.train import TrainConfig, train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=200)
    out = tmp_path_factory.mktemp("models") / "tiny_reg"
    cfg = TrainConfig(task="regression", name="tiny_reg", hidden=16, layers=1, epochs=5, tau=100.0)
    train(Dataset(x, y, ["a", "b", "c"], ["y"]), cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from service.artifacts.data import Dataset
    from service.training.train import TrainConfig, train

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float64) + (x[:, 2] > 1).astype(np.float64)
    out = tmp_path_factory.mktemp("models") / "tiny_clf"
    cfg = TrainConfig(task="classification", name="tiny_clf", hidden=16, layers=1, epochs=5)
    train(Dataset(x, y), cfg, out, progress=False)
    return out

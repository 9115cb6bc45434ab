"""Serving fixtures: a model folder holding the tiny models plus a broken one, and apps on it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.config import Settings


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    # Session scope lets module-scoped async fixtures share one event loop with the tests.
    return "asyncio"


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the app, with the app's lifespan (model loading) run around it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mcdrop") as c:
            yield c


@pytest.fixture(scope="session")
def tiny_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A convnet on 1×4×4 images, so rows can be nested arrays."""
    from service.artifacts.data import Dataset
    from service.training.train import TrainConfig, train

    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 1, 4, 4))
    y = (x.sum(axis=(1, 2, 3)) > 0).astype(np.float64)
    out = tmp_path_factory.mktemp("models") / "tiny_img"
    cfg = TrainConfig(
        task="classification",
        name="tiny_img",
        arch="convnet",
        conv_channels=[2],
        hidden=8,
        layers=1,
        epochs=1,
    )
    train(Dataset(x, y), cfg, out, progress=False)
    return out


@pytest.fixture(scope="session")
def serving_dir(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_regression_dir: Path,
    tiny_classifier_dir: Path,
    tiny_image_dir: Path,
) -> Path:
    """tiny_reg, tiny_clf, tiny_img, and `broken`: tiny_reg with one weight byte flipped."""
    root = tmp_path_factory.mktemp("serving")
    for src in (tiny_regression_dir, tiny_classifier_dir, tiny_image_dir):
        shutil.copytree(src, root / src.name)
    broken = root / "broken"
    shutil.copytree(tiny_regression_dir, broken)
    weights = broken / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return root


def settings_for(model_dir: Path, **overrides: Any) -> Settings:
    return Settings(model_dir=str(model_dir), default_model="tiny_reg", **overrides)


@pytest.fixture(scope="module")
async def client(serving_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An app on serving_dir with its lifespan running (models loaded)."""
    async with running(create_app(settings_for(serving_dir))) as c:
        yield c


REG_ROW = [0.5, -1.0, 2.0]  # tiny_reg has 3 features
CLF_ROW = [0.1, 0.2, -0.3, 1.5]  # tiny_clf has 4

"""Packaged and imported models through the server: batching, seeds, auto T, V2, reload, 503."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from pydantic import SecretStr

from service import package_torch
from service.api.app import create_app
from service.cli import main
from service.config import Settings
from service.serving.model import load_model
from service.serving.results import ClassificationResult
from service.training.packaging import import_onnx
from tests.api.conftest import running
from tests.byom.graphs import MLP, Q, dropout_graph

pytestmark = pytest.mark.anyio
KEY = "byom-key-0123456789abcdef"
ROWS = np.random.default_rng(0).standard_normal((3, Q)).round(3).tolist()


@pytest.fixture(scope="module")
def byom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("byom")
    torch.manual_seed(0)
    package_torch(
        MLP(), torch.randn(4, Q), root / "pkg", task="classification", class_labels=["a", "b", "c"]
    )
    src = dropout_graph(root.parent / "g.onnx", 13)
    import_onnx(src, root / "imported", task="regression", tau=50.0)
    return root


@pytest.fixture(scope="module")
async def client(byom_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(model_dir=str(byom_dir), api_keys=SecretStr(KEY)))
    async with running(app) as c:
        c.headers["X-API-Key"] = KEY
        yield c


@pytest.mark.parametrize("name", ["pkg", "imported"])
async def test_served_answer_equals_the_library_and_batching_changes_nothing(
    client: httpx.AsyncClient, byom_dir: Path, name: str
) -> None:
    body = {"inputs": ROWS, "samples": 40, "seed": 9}
    lone = (await client.post(f"/v1/models/{name}/predict", json=body)).json()
    lib = load_model(byom_dir / name).predict(ROWS, samples=40, seed=9)
    np.testing.assert_allclose([p["mean"] for p in lone["predictions"]], lib.mean, rtol=1e-5)
    # Concurrent requests share batched passes; each still equals its lone answer.
    others = [{"inputs": ROWS[:1], "samples": 30, "seed": s} for s in range(6)]
    replies = await asyncio.gather(
        *[client.post(f"/v1/models/{name}/predict", json=b) for b in [*others, body]]
    )
    assert replies[-1].json()["predictions"] == lone["predictions"]


async def test_threshold_and_auto_samples(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/pkg/predict", json={"inputs": ROWS, "threshold": 0.0})
    assert all(p["abstain"] for p in r.json()["predictions"])
    auto = {"inputs": ROWS, "samples": "auto", "max_samples": 64, "seed": 1}
    a = (await client.post("/v1/models/pkg/predict", json=auto)).json()
    b = (await client.post("/v1/models/pkg/predict", json=auto)).json()
    assert a["predictions"] == b["predictions"]
    assert all(16 <= p["samples_used"] <= 64 for p in a["predictions"])
    metrics = (await client.get("/metrics")).text
    served = [line for line in metrics.splitlines() if 'model="pkg"' in line]
    assert any(line.startswith("mcdrop_") and not line.startswith("#") for line in served)


async def test_v2_infer(client: httpx.AsyncClient) -> None:
    req = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [3, Q], "data": np.ravel(ROWS).tolist()}
        ],
        "parameters": {"samples": 40, "seed": 9},
    }
    r = await client.post("/v2/models/imported/infer", json=req)
    assert r.status_code == 200, r.text
    v1 = (
        await client.post(
            "/v1/models/imported/predict", json={"inputs": ROWS, "samples": 40, "seed": 9}
        )
    ).json()
    mean = next(o for o in r.json()["outputs"] if o["name"] == "mean")
    np.testing.assert_allclose(
        np.ravel(mean["data"]), np.ravel([p["mean"] for p in v1["predictions"]]), rtol=1e-5
    )


async def test_hot_reload_serves_a_repackaged_model(
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    torch.manual_seed(0)
    package_torch(MLP(), torch.randn(4, Q), root / "m", task="classification")
    async with running(create_app(Settings(model_dir=str(root), api_keys=SecretStr(KEY)))) as c:
        c.headers["X-API-Key"] = KEY
        body = {"inputs": ROWS, "samples": 20, "seed": 1}
        before = (await c.post("/v1/models/m/predict", json=body)).json()["predictions"]
        torch.manual_seed(1)
        package_torch(MLP(), torch.randn(4, Q), root / "m", task="classification", overwrite=True)
        r = await c.post("/v1/admin/reload")
        assert r.status_code == 200 and r.json()["loaded"] == ["m"]
        after = (await c.post("/v1/models/m/predict", json=body)).json()["predictions"]
        assert after != before


async def test_cuda_without_the_provider_is_a_503_naming_why(byom_dir: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    app = create_app(Settings(model_dir=str(byom_dir), api_keys=SecretStr(KEY), device="cuda"))
    async with running(app) as c:
        r = await c.post(
            "/v1/models/imported/predict", json={"inputs": ROWS}, headers={"X-API-Key": KEY}
        )
        assert r.status_code == 503
        assert "CUDAExecutionProvider" in r.json()["error"]


def test_calibrate_and_evaluate_run_on_a_packaged_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    folder = package_torch(MLP(), torch.randn(4, Q), tmp_path / "m", task="classification")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, Q))
    p = load_model(folder).predict(x, samples=30, seed=0)
    assert isinstance(p, ClassificationResult)
    y = p.label  # labels it mostly gets right
    flip = rng.random(300) < 0.2
    y = np.where(flip, (y + 1) % 3, y)
    np.savez(tmp_path / "heldout.npz", x=x, y=y)
    code = main(
        [
            "calibrate",
            str(folder),
            "--data",
            str(tmp_path / "heldout.npz"),
            "--max-referral-rate",
            "0.3",
        ]
    )
    assert code == 0
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["calibration"] is not None
    code = main(
        [
            "evaluate",
            str(folder),
            "--data",
            str(tmp_path / "heldout.npz"),
            "--out",
            str(tmp_path / "report"),
            "--samples",
            "20",
        ]
    )
    assert code == 0 and (tmp_path / "report" / "report.json").is_file()

"""Faults: broken model files, a missing directory, links and names that try to leave the model
directory, and hot reload (including under load). The process stays live through all of them,
readiness tells the truth, and the models that can serve keep serving."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import external_data_helper, numpy_helper
from pydantic import SecretStr

from service.api.app import create_app
from service.artifacts.manifest import read_manifest, save_weights, sha256_file
from service.config import Settings
from service.engines import onnx_export
from service.engines.onnx_engine import OnnxEngine
from service.engines.runtime import EngineRuntime
from service.errors import ArtifactError
from service.serving.registry import ModelRegistry
from tests.api.conftest import REG_ROW, running

pytestmark = pytest.mark.anyio

KEY = "reload-key-0123456789abcdef"


def _copy(src: Path, root: Path, name: str) -> Path:
    return Path(shutil.copytree(src, root / name))


def _reason(body: dict[str, object], name: str) -> str:
    models = body["models"]
    assert isinstance(models, list)
    return str(next(m for m in models if m["name"] == name)["reason"])


async def test_broken_files_leave_the_others_serving(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    _copy(tiny_regression_dir, tmp_path, "good")
    corrupt = _copy(tiny_regression_dir, tmp_path, "corrupt")  # garbage, checksum updated
    (corrupt / "weights.safetensors").write_bytes(b"\x00\x01 not safetensors " * 10)
    manifest = json.loads((corrupt / "model.json").read_text())
    manifest["weights"]["sha256"] = sha256_file(corrupt / "weights.safetensors")
    (corrupt / "model.json").write_text(json.dumps(manifest))
    wrong = _copy(tiny_regression_dir, tmp_path, "wrong_sum")  # valid file, other checksum
    manifest = json.loads((wrong / "model.json").read_text())
    manifest["weights"]["sha256"] = "0" * 64
    (wrong / "model.json").write_text(json.dumps(manifest))
    async with running(create_app(Settings(model_dir=str(tmp_path), default_model="good"))) as c:
        assert (await c.get("/health/live")).status_code == 200
        ready = (await c.get("/health/ready")).json()
        assert ready["models"] == {"corrupt": False, "good": True, "wrong_sum": False}
        listing = (await c.get("/v1/models")).json()
        assert "not a readable safetensors file" in _reason(listing, "corrupt")
        assert "SHA-256 mismatch" in _reason(listing, "wrong_sum")
        assert (await c.post("/v1/models/good/predict", json={"inputs": [REG_ROW]})).is_success
        r = await c.post("/v1/models/corrupt/predict", json={"inputs": [REG_ROW]})
        assert r.status_code == 503


def test_truncated_onnx_graph_is_an_artifact_error(
    tiny_classifier_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(tiny_classifier_dir, tmp_path, "m")
    onnx_export.export_onnx(folder, samples=200)
    graph = folder / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    registry = ModelRegistry(tmp_path, runtime=EngineRuntime(engine="onnx"))
    registry.load_all()  # does not raise: the folder is marked not ready
    entry = registry.entries["m"]
    assert not entry.ready and entry.reason and "not a loadable ONNX graph" in entry.reason


def test_onnx_external_data_is_never_read(tiny_classifier_dir: Path, tmp_path: Path) -> None:
    """A graph whose tensor points at a file outside the folder fails to load: the session is
    built from bytes, so it has no directory to resolve external data against."""
    folder = _copy(tiny_classifier_dir, tmp_path, "m")
    onnx_export.export_onnx(folder, samples=200)
    model = onnx.load(str(folder / "model.onnx"))
    tensor = model.graph.initializer[0]
    secret = tmp_path / "secret.bin"
    secret.write_bytes(numpy_helper.to_array(tensor).tobytes())
    external_data_helper.set_external_data(tensor, location="../secret.bin")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(ArtifactError, match="not a loadable ONNX graph"):
        OnnxEngine(folder / "model.onnx", folder, read_manifest(folder))


async def test_missing_model_directory_keeps_the_process_live(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    root = tmp_path / "models"
    app = create_app(Settings(model_dir=str(root), api_keys=SecretStr(KEY)))
    async with running(app) as c:
        assert (await c.get("/health/live")).status_code == 200
        ready = await c.get("/health/ready")
        assert ready.status_code == 503 and "does not exist" in ready.json()["reason"]
        shutil.copytree(tiny_regression_dir, root / "m")  # the volume appears
        r = await c.post("/v1/admin/reload", headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["loaded"] == ["m"]
        assert (await c.get("/health/ready")).status_code == 200
        shutil.rmtree(root)  # gone again: the loaded model keeps serving
        r = await c.post("/v1/admin/reload", headers={"X-API-Key": KEY})
        assert r.status_code == 503 and "keep serving" in r.json()["error"]
        r = await c.post(
            "/v1/models/m/predict", json={"inputs": [REG_ROW]}, headers={"X-API-Key": KEY}
        )
        assert r.is_success


async def test_links_and_names_out_of_the_directory_are_refused(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    root, outside = tmp_path / "models", tmp_path / "outside"
    root.mkdir()
    _copy(tiny_regression_dir, root, "good")
    _copy(tiny_regression_dir, outside, "evil")
    (root / "linked").symlink_to(outside / "evil")  # a folder link out of the directory
    sneaky = _copy(tiny_regression_dir, root, "sneaky")  # a weights link out of its folder
    (sneaky / "weights.safetensors").unlink()
    (sneaky / "weights.safetensors").symlink_to(outside / "evil" / "weights.safetensors")
    async with running(create_app(Settings(model_dir=str(root), default_model="good"))) as c:
        listing = (await c.get("/v1/models")).json()
        assert "outside the model directory" in _reason(listing, "linked")
        assert "outside the model folder" in _reason(listing, "sneaky")
        for path in (
            "/v1/models/../x",
            "/v1/models/%2e%2e",
            "/v1/models/%2e%2e%2fx",
            "/v1/models/..%2F..%2Fetc%2Fpasswd",
            "/v1/models/%2e%2e/predict",
        ):
            r = (
                await c.get(path)
                if not path.endswith("predict")
                else await c.post(path, json={"inputs": [REG_ROW]})
            )
            assert r.status_code in (404, 405), (path, r.status_code)
        for name in ("../x", "..", "%2e%2e", "a/b", "/etc"):
            r = await c.post("/predict", json={"model": name, "inputs": [REG_ROW]})
            assert r.status_code in (404, 422), (name, r.status_code)


def test_weights_link_out_of_the_folder_is_refused_by_the_loader(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    """The same check, one layer down: load_weights resolves the file itself."""
    from service.serving.model import load_model

    folder = _copy(tiny_regression_dir, tmp_path, "m")
    elsewhere = tmp_path / "w.safetensors"
    shutil.move(folder / "weights.safetensors", elsewhere)
    (folder / "weights.safetensors").symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match="inside the model folder"):
        load_model(folder)


async def test_reload_swaps_in_changed_models_and_keeps_a_failed_ones_old_version(
    tmp_path: Path, tiny_regression_dir: Path, tiny_classifier_dir: Path
) -> None:
    m = _copy(tiny_regression_dir, tmp_path, "m")
    app = create_app(Settings(model_dir=str(tmp_path), default_model="m", api_keys=SecretStr(KEY)))
    auth = {"X-API-Key": KEY}
    async with running(app) as c:
        assert (await c.post("/v1/admin/reload")).status_code == 401
        c.headers.update(auth)
        v1 = await c.get("/v1/models/m")
        assert v1.json()["version"] == "1"
        # A new version: same weights, another version string.
        manifest = json.loads((m / "model.json").read_text())
        manifest["version"] = "2"
        (m / "model.json").write_text(json.dumps(manifest))
        _copy(tiny_classifier_dir, tmp_path, "added")
        report = (await c.post("/v1/admin/reload", headers=auth)).json()
        assert report == {"loaded": ["added", "m"], "unchanged": [], "failed": [], "removed": []}
        assert (await c.get("/v1/models/m")).json()["version"] == "2"
        # A broken version 3: version 2 keeps serving and the failure is reported.
        save_weights(m, {"nonsense": np.zeros(3, np.float32)})
        report = (await c.post("/v1/admin/reload", headers=auth)).json()
        assert report["failed"] == ["m"] and report["unchanged"] == ["added"]
        described = (await c.get("/v1/models/m")).json()
        assert described["ready"] and described["version"] == "2"
        assert "SHA-256 mismatch" in described["reload_error"]
        r = await c.post("/v1/models/m/predict", json={"inputs": [REG_ROW]})
        assert r.status_code == 200 and r.json()["version"] == "2"
        shutil.rmtree(tmp_path / "added")
        report = (await c.post("/v1/admin/reload", headers=auth)).json()
        assert report["removed"] == ["added"]
        assert (await c.get("/v1/models/added")).status_code == 404


async def test_reload_without_keys_is_forbidden(serving_dir: Path) -> None:
    async with running(create_app(Settings(model_dir=str(serving_dir)))) as c:
        r = await c.post("/v1/admin/reload")
        assert r.status_code == 403 and "SIGHUP" in r.json()["error"]


async def test_reload_during_load_loses_no_request(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    """200 concurrent predictions while the model is replaced five times: every one is a 200,
    answered by one whole version or the other."""
    m = _copy(tiny_regression_dir, tmp_path, "m")
    app = create_app(Settings(model_dir=str(tmp_path), default_model="m", api_keys=SecretStr(KEY)))
    auth = {"X-API-Key": KEY}
    async with running(app) as c:

        async def predict(i: int) -> httpx.Response:
            body = {"inputs": [REG_ROW], "samples": 20, "seed": i}
            return await c.post("/v1/models/m/predict", json=body, headers=auth)

        async def reloads() -> list[int]:
            codes = []
            for v in range(2, 7):
                manifest = json.loads((m / "model.json").read_text())
                manifest["version"] = str(v)
                (m / "model.json").write_text(json.dumps(manifest))
                codes.append((await c.post("/v1/admin/reload", headers=auth)).status_code)
                await asyncio.sleep(0)
            return codes

        predictions = asyncio.gather(*(predict(i) for i in range(200)))
        reload_codes, responses = await asyncio.gather(reloads(), predictions)
    assert reload_codes == [200] * 5
    assert [r.status_code for r in responses] == [200] * 200
    versions = {r.json()["version"] for r in responses}
    assert versions <= {"1", "2", "3", "4", "5", "6"}

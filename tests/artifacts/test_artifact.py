"""Model folders: round trip, and refusal of tampered, incomplete or pickled weights."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from service import load_model
from service.artifacts.manifest import read_manifest, sha256_file
from service.errors import ArtifactError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_round_trip_rebuilds_the_same_network(tiny_regression_dir: Path) -> None:
    m1 = load_model(tiny_regression_dir, device="cpu")
    m2 = load_model(tiny_regression_dir, device="cpu")
    x = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_array_equal(m1.predict_standard(x), m2.predict_standard(x))
    manifest = read_manifest(tiny_regression_dir)
    assert manifest.format_version == 1
    assert manifest.tau == 100.0
    assert manifest.feature_names == ["a", "b", "c"]
    assert manifest.weights.sha256 == sha256_file(tiny_regression_dir / "weights.safetensors")


def test_tampered_weights_fail_the_checksum(tiny_regression_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_regression_dir, tmp_path / "m")
    w = folder / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"weights\.safetensors: SHA-256 mismatch"):
        load_model(folder, device="cpu")


def _rewrite_weights(folder: Path, tensors: dict[str, np.ndarray]) -> None:
    save_file(tensors, folder / "weights.safetensors")
    manifest = json.loads((folder / "model.json").read_text())
    manifest["weights"]["sha256"] = sha256_file(folder / "weights.safetensors")
    (folder / "model.json").write_text(json.dumps(manifest))


def test_missing_tensor_is_named(tiny_regression_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_regression_dir, tmp_path / "m")
    tensors = load_file(folder / "weights.safetensors")
    name = sorted(tensors)[0]
    del tensors[name]
    _rewrite_weights(folder, tensors)
    with pytest.raises(ArtifactError, match=f"missing tensor '{name}'"):
        load_model(folder, device="cpu")


def test_misshapen_tensor_is_named(tiny_regression_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_regression_dir, tmp_path / "m")
    tensors = load_file(folder / "weights.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = np.zeros((2, 2), np.float32)
    _rewrite_weights(folder, tensors)
    with pytest.raises(ArtifactError, match=f"tensor '{name}' has shape"):
        load_model(folder, device="cpu")


def test_pickle_weights_are_refused_without_unpickling(
    tiny_regression_dir: Path, tmp_path: Path
) -> None:
    folder = _copy(tiny_regression_dir, tmp_path / "m")

    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled!",))

    (folder / "weights.pt").write_bytes(pickle.dumps(Boom()))
    manifest = json.loads((folder / "model.json").read_text())
    manifest["weights"] = {"file": "weights.pt", "sha256": sha256_file(folder / "weights.pt")}
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"must be a \.safetensors file"):
        load_model(folder, device="cpu")
    # A pickle renamed to .safetensors is not readable as safetensors either.
    (folder / "weights.safetensors").write_bytes(pickle.dumps(Boom()))
    manifest["weights"] = {
        "file": "weights.safetensors",
        "sha256": sha256_file(folder / "weights.safetensors"),
    }
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_model(folder, device="cpu")


def test_invalid_manifest_names_the_field(tiny_regression_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_regression_dir, tmp_path / "m")
    manifest = json.loads((folder / "model.json").read_text())
    manifest["dropout"]["hidden_rate"] = 1.5
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"dropout\.hidden_rate"):
        load_model(folder, device="cpu")


@pytest.mark.parametrize("name", ["diabetes", "digits"])
def test_shipped_models_load_and_are_small(name: str) -> None:
    from tests.conftest import MODELS

    folder = MODELS / name
    assert sum(f.stat().st_size for f in folder.iterdir()) < 5 * 2**20
    model = load_model(folder, device="cpu")
    x = np.zeros((2, model.manifest.input_size))
    p = model.predict(x, samples=20, seed=0)
    assert p.mean.shape[0] == 2 and np.all(np.isfinite(p.variance))

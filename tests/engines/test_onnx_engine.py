"""The onnxruntime engine: masks as graph inputs, self-verified export, guarded loading."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.artifacts.manifest import read_manifest
from service.cli import main
from service.engines import onnx_export
from service.engines.base import SampleJob
from service.engines.onnx_engine import OnnxEngine
from service.errors import ArtifactError
from service.serving.model import load_model


@pytest.fixture
def folder(tiny_classifier_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "tiny_clf"
    shutil.copytree(tiny_classifier_dir, out)
    return out


def test_export_then_seeded_samples_match_the_torch_engine(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export-onnx", str(folder), "--samples", "1000"]) == 0
    assert "same_seed_max_abs_diff" in capsys.readouterr().out
    onnx_model = load_model(folder, engine="onnx")
    torch_model = load_model(folder, engine="torch", device="cpu")
    x = onnx_model.prepare(np.random.default_rng(3).standard_normal((3, 4)))
    job = SampleJob(x, 64, seed=11)
    ours = onnx_model.engine.sample_many([job])[0]
    # Same streams, same masks: equal to float rounding (not just in distribution).
    np.testing.assert_allclose(ours, torch_model.engine.sample_many([job])[0], atol=1e-4)
    other = SampleJob(x[:1], 30, seed=12)
    batched = onnx_model.engine.sample_many([other, job])
    np.testing.assert_allclose(batched[1], ours, atol=1e-5)
    assert not np.allclose(ours[0], ours[1])  # the passes differ
    np.testing.assert_allclose(
        onnx_model.engine.deterministic(x), torch_model.engine.deterministic(x), atol=1e-4
    )


def _lose_a_mask(model: onnx.ModelProto) -> onnx.ModelProto:
    """What EliminateDropout did to Dropout nodes: the hidden site's masking disappears."""
    for node in model.graph.node:
        if node.op_type == "Mul" and node.input[1] == "mask_1":
            node.op_type = "Identity"
            del node.input[1]
            return model
    raise AssertionError("no Mul for mask_1")


def test_verification_catches_a_removed_dropout_site(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_export.build_graph
    monkeypatch.setattr(onnx_export, "build_graph", lambda e, m: _lose_a_mask(real(e, m)))
    # The graph still varies from pass to pass (the input site is intact), so only the
    # comparison of variances/means with torch can tell.
    with pytest.raises(onnx_export.ExportError, match="variance ratio"):
        onnx_export.export_onnx(folder, samples=1000)
    assert not (folder / "model.onnx").exists()
    assert not (folder / "model.onnx.tmp").exists()


def test_graphs_load_only_from_inside_the_folder(folder: Path, tmp_path: Path) -> None:
    onnx_export.export_onnx(folder, samples=500)
    manifest = read_manifest(folder)
    outside = tmp_path / "model.onnx"
    shutil.copy(folder / "model.onnx", outside)
    with pytest.raises(ArtifactError, match="only from"):
        OnnxEngine(outside, folder, manifest)
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(outside)
    with pytest.raises(ArtifactError, match="only from"):
        OnnxEngine(folder / "model.onnx", folder, manifest)


def test_a_graph_from_other_weights_is_refused(folder: Path) -> None:
    onnx_export.export_onnx(folder, samples=500)
    manifest = read_manifest(folder).model_copy(deep=True)
    manifest.weights.sha256 = "0" * 64
    with pytest.raises(ArtifactError, match="re-run"):
        OnnxEngine(folder / "model.onnx", folder, manifest)


def test_missing_graph_says_how_to_make_one(folder: Path) -> None:
    with pytest.raises(ArtifactError, match="export-onnx"):
        load_model(folder, engine="onnx")

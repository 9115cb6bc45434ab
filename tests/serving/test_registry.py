"""ModelRegistry: loads what it can, records what it cannot, refuses bad configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.artifacts.names import valid_model_name
from service.engines.runtime import EngineRuntime
from service.errors import ModelNotFound, ModelNotReady
from service.serving.registry import ModelRegistry


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("diabetes", True),
        ("model-v1.2_b", True),
        ("..", False),
        ("a..b", False),
        ("a/b", False),
        ("", False),
        ("x" * 129, False),
        ("naïve", False),
        ("a b", False),
    ],
)
def test_valid_model_name(name: str, ok: bool) -> None:
    assert valid_model_name(name) is ok


def test_one_bad_folder_leaves_the_others_serving(
    tmp_path: Path, tiny_regression_dir: Path, tiny_classifier_dir: Path
) -> None:
    shutil.copytree(tiny_regression_dir, tmp_path / "good")
    shutil.copytree(tiny_classifier_dir, tmp_path / "no_weights")
    (tmp_path / "no_weights" / "weights.safetensors").unlink()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "model.json").write_text("{not json")
    (tmp_path / "bad name!").mkdir()  # skipped: not addressable by URL
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "README.txt").write_text("not a model")
    reg = ModelRegistry(tmp_path)
    reg.load_all()
    assert sorted(reg.entries) == ["garbage", "good", "no_weights"]
    assert reg.entries["good"].ready
    assert "weights file not found" in (reg.entries["no_weights"].reason or "")
    assert reg.entries["no_weights"].manifest is not None  # still described
    assert "not valid JSON" in (reg.entries["garbage"].reason or "")
    assert reg.entries["garbage"].manifest is None
    assert reg.get("good").task == "regression"
    with pytest.raises(ModelNotReady, match="weights file not found"):
        reg.get("no_weights")
    with pytest.raises(ModelNotFound):
        reg.get("missing")
    # Default: the first name alphabetically, ready or not (never silently another model).
    assert reg.default_name == "garbage"
    with pytest.raises(ModelNotReady):
        reg.get(None)


def test_lookups_before_loading_are_not_ready(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelNotReady, match="still loading"):
        reg.get("anything")


def test_bad_configuration_is_refused(tmp_path: Path, tiny_regression_dir: Path) -> None:
    missing = ModelRegistry(tmp_path / "nowhere")
    missing.load_all()  # not fatal: loaded, nothing ready, and the reason kept for readiness
    assert missing.loaded and not missing.any_ready()
    assert missing.error is not None and "does not exist" in missing.error
    shutil.copytree(tiny_regression_dir, tmp_path / "a")
    with pytest.raises(ValueError, match="default model 'b'"):
        ModelRegistry(tmp_path, default_model="b").load_all()


def test_a_gpu_precision_on_the_cpu_leaves_the_model_not_ready_with_the_reason(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    shutil.copytree(tiny_regression_dir, tmp_path / "reg")
    reg = ModelRegistry(tmp_path, runtime=EngineRuntime(device="cpu", precision="bf16"))
    reg.load_all()
    entry = reg.entries["reg"]
    assert not entry.ready
    assert "bf16" in str(entry.reason) and "CUDA" in str(entry.reason)
    ok = ModelRegistry(tmp_path, runtime=EngineRuntime(device="cpu"))
    ok.load_all()
    assert ok.entries["reg"].ready

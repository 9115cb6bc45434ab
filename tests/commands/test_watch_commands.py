"""`mcdrop calibrate` stores reference scores; `mcdrop evaluate --ood` and `--shift`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.artifacts.manifest import read_manifest
from service.artifacts.reference import load_reference
from service.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _classifier_data(path: Path, n: int, seed: int, offset: float = 0.0) -> Path:
    # The tiny classifier's own rule (see conftest): y = [x0 + x1 > 0] + [x2 > 1].
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    np.savez(path, x=x + offset, y=y)
    return path


@pytest.fixture
def clf_copy(tiny_classifier_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_classifier_dir, tmp_path / "clf"))


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A convnet on 1x8x8 grey images (0..255) and labelled test images for it."""
    from service.artifacts.data import Dataset
    from service.training.train import TrainConfig, train

    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (120, 1, 8, 8)).astype(np.float64)
    y = (x[:, 0, :4].mean(axis=(1, 2)) > x[:, 0, 4:].mean(axis=(1, 2))).astype(np.float64)
    root = tmp_path_factory.mktemp("images")
    cfg = TrainConfig(
        task="classification",
        name="img",
        arch="convnet",
        conv_channels=[2],
        hidden=8,
        layers=1,
        epochs=2,
        input_scale=1 / 255,
    )
    train(Dataset(x, y), cfg, root / "img", progress=False)
    np.savez(root / "test.npz", x=x[:40], y=y[:40])
    return root / "img", root / "test.npz"


def test_calibrate_stores_hashed_reference_scores(clf_copy: Path, tmp_path: Path) -> None:
    data = _classifier_data(tmp_path / "held.npz", 400, 7)
    argv = [
        "calibrate",
        str(clf_copy),
        "--data",
        str(data),
        "--max-referral-rate",
        "0.2",
        "--metric",
        "mutual_information",
        "--samples",
        "10",
    ]
    assert main(argv) == 0
    m = read_manifest(clf_copy)
    assert m.reference is not None and m.reference.n == 400
    ref = load_reference(clf_copy, m)
    assert ref is not None
    assert (ref.metric, ref.threshold, ref.samples) == ("mutual_information", m.threshold, 10)
    assert ref.referral_rate == pytest.approx(float(np.mean(ref.scores > m.threshold)))
    assert m.calibration is not None and ref.calibrated_at == m.calibration["date"]


def test_reference_only_keeps_the_threshold(clf_copy: Path, tmp_path: Path) -> None:
    data = _classifier_data(tmp_path / "held.npz", 300, 8)
    argv = ["calibrate", str(clf_copy), "--data", str(data), "--samples", "10"]
    assert main([*argv, "--reference-only"]) == 2  # never calibrated: nothing to keep
    assert main([*argv, "--max-referral-rate", "0.3"]) == 0
    before = read_manifest(clf_copy)
    (clf_copy / "reference.safetensors").unlink()
    assert main([*argv, "--reference-only", "--seed", "1"]) == 0
    after = read_manifest(clf_copy)
    assert after.threshold == before.threshold and after.calibration == before.calibration
    assert after.reference is not None and after.reference.sha256 != before.reference.sha256  # type: ignore[union-attr]
    assert load_reference(clf_copy, after) is not None


def test_evaluate_ood_reports_auroc_aupr_and_referral_rate(
    tiny_classifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _classifier_data(tmp_path / "test.npz", 100, 5)
    far = _classifier_data(tmp_path / "far.npz", 50, 6, offset=8.0)
    out = tmp_path / "report"
    argv = [
        "evaluate",
        str(tiny_classifier_dir),
        "--data",
        str(data),
        "--ood",
        str(far),
        "--ood",
        str(data),
        "--out",
        str(out),
        "--samples",
        "10",
        "--limit",
        "80",
    ]
    assert main(argv) == 0
    report = json.loads((out / "ood.json").read_text())
    assert report["n"] == 80
    assert set(report["ood"]) == {"far", "test"}
    for metric in ("predictive_entropy", "mutual_information", "variation_ratio"):
        for name in ("far", "test"):
            assert 0.0 <= report["ood"][name][metric]["auroc"] <= 1.0
            assert 0.0 <= report["ood"][name][metric]["aupr"] <= 1.0
    assert 0.0 <= report["ood"]["far"]["referral_rate"] <= 1.0
    assert (out / "ood.png").read_bytes()[:8] == PNG_MAGIC
    assert "| far | 50 |" in capsys.readouterr().out


def test_evaluate_shift_reports_both_methods_per_intensity(
    tiny_images: tuple[Path, Path], tmp_path: Path
) -> None:
    model, data = tiny_images
    out = tmp_path / "shift"
    argv = [
        "evaluate",
        str(model),
        "--data",
        str(data),
        "--shift",
        "noise",
        "--intensities",
        "0",
        "0.5",
        "--out",
        str(out),
        "--samples",
        "10",
    ]
    assert main(argv) == 0
    report = json.loads((out / "shift_noise.json").read_text())
    assert [s["intensity"] for s in report["intensities"]] == [0.0, 0.5]
    for step in report["intensities"]:
        for method in ("mc_dropout", "standard_dropout"):
            assert {"accuracy", "nll", "ece", "aurc", "referral_rate"} <= set(step[method])
    # Noise at half the pixel range is a real shift: the images (and so the answers) change.
    first, second = (s["mc_dropout"]["nll"] for s in report["intensities"])
    assert first != second
    assert (out / "shift_noise.png").read_bytes()[:8] == PNG_MAGIC


def test_shift_needs_an_image_classifier(
    tiny_classifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _classifier_data(tmp_path / "test.npz", 20, 5)
    argv = [
        "evaluate",
        str(tiny_classifier_dir),
        "--data",
        str(data),
        "--shift",
        "rotate",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "needs an image classifier" in capsys.readouterr().err

"""`mcdrop calibrate`, `mcdrop evaluate` and `mcdrop serve` settings errors, on the tiny fixture
models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.artifacts.manifest import read_manifest
from service.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _classifier_data(path: Path, n: int, seed: int) -> Path:
    # The tiny classifier's own rule (see conftest): y = [x0 + x1 > 0] + [x2 > 1].
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    np.savez(path, x=x, y=y)
    return path


def _regression_data(path: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture
def clf_copy(tiny_classifier_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_classifier_dir, tmp_path / "clf"))


def test_evaluate_classifier_writes_json_and_pngs(
    tiny_classifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _classifier_data(tmp_path / "test.npz", 200, 5)
    out = tmp_path / "report"
    args = ["evaluate", str(tiny_classifier_dir), "--data", str(data), "--out", str(out)]
    assert main([*args, "--samples", "10"]) == 0
    report = json.loads((out / "report.json").read_text())
    for method in ("mc_dropout", "standard_dropout"):
        figures = report[method]
        assert {"accuracy", "nll", "brier", "ece", "aurc", "referral"} <= set(figures)
        assert 0.0 <= figures["ece"] <= 1.0
        rates = [r["referral_rate"] for r in next(iter(figures["referral"].values()))]
        assert rates == [0.0, 0.05, 0.10, 0.20, 0.30]
    assert set(report["mc_dropout"]["aurc"]) == {
        "predictive_entropy",
        "mutual_information",
        "variation_ratio",
    }
    assert set(report["standard_dropout"]["aurc"]) == {"predictive_entropy", "least_confidence"}
    for name in report["plots"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert "| referred |" in capsys.readouterr().out


def test_evaluate_regression_reports_rmse_and_ll(tiny_regression_dir: Path, tmp_path: Path) -> None:
    data = _regression_data(tmp_path / "test.npz", 100, 6)
    out = tmp_path / "report"
    assert (
        main(
            [
                "evaluate",
                str(tiny_regression_dir),
                "--data",
                str(data),
                "--out",
                str(out),
                "--samples",
                "10",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert {"rmse", "log_likelihood"} <= set(report["mc_dropout"])
    assert set(report["mc_dropout"]["aurc"]) == {"std", "variance", "epistemic_std"}
    assert (out / "reliability.png").read_bytes()[:8] == PNG_MAGIC


def test_calibrate_referral_writes_the_manifest(clf_copy: Path, tmp_path: Path) -> None:
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
    cal = m.calibration
    assert cal is not None
    assert m.uncertainty_metric == "mutual_information" == cal["metric"]
    assert m.threshold == cal["threshold"]
    assert cal["max_referral_rate"] == 0.2 and cal["delta"] == 0.05 and cal["n"] == 400
    assert len(cal["sha256"]) == 64 and cal["date"]
    assert cal["coverage"] >= 0.8 - 1e-9


def test_calibrate_error_target_compares_metrics(clf_copy: Path, tmp_path: Path) -> None:
    data = _classifier_data(tmp_path / "held.npz", 1000, 8)
    argv = [
        "calibrate",
        str(clf_copy),
        "--data",
        str(data),
        "--target-error",
        "0.3",
        "--samples",
        "10",
    ]
    assert main(argv) == 0
    cal = read_manifest(clf_copy).calibration
    assert cal is not None
    assert set(cal["aurc_on_selection"]) == {
        "predictive_entropy",
        "mutual_information",
        "variation_ratio",
    }
    assert cal["metric"] == min(cal["aurc_on_selection"], key=cal["aurc_on_selection"].get)
    assert cal["n_select"] + cal["n_test"] == 1000
    assert cal["retained_error_upper_bound"] <= 0.3


def test_unmeetable_target_is_refused_and_nothing_written(
    clf_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _classifier_data(tmp_path / "held.npz", 300, 9)
    before = (clf_copy / "model.json").read_bytes()
    argv = ["calibrate", str(clf_copy), "--data", str(data), "--target-error", "0.001"]
    assert main(argv) == 1
    assert "target not met, nothing written" in capsys.readouterr().err
    assert (clf_copy / "model.json").read_bytes() == before


def test_dry_run_leaves_the_manifest_alone(clf_copy: Path, tmp_path: Path) -> None:
    data = _classifier_data(tmp_path / "held.npz", 300, 10)
    before = (clf_copy / "model.json").read_bytes()
    argv = [
        "calibrate",
        str(clf_copy),
        "--data",
        str(data),
        "--max-referral-rate",
        "0.3",
        "--dry-run",
        "--samples",
        "10",
    ]
    assert main(argv) == 0
    assert (clf_copy / "model.json").read_bytes() == before


def test_wrong_target_kind_is_a_clear_error(
    tiny_regression_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _regression_data(tmp_path / "held.npz", 50, 11)
    argv = ["calibrate", str(tiny_regression_dir), "--data", str(data), "--target-error", "0.1"]
    assert main(argv) == 2
    assert "--target-rmse" in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "no-such-model", "--data", str(tmp_path / "x.npz")]
    assert main(argv) == 2
    assert "neither a model folder nor a name under models/" in capsys.readouterr().err


def test_calibrate_rmse_target(tiny_regression_dir: Path, tmp_path: Path) -> None:
    reg = Path(shutil.copytree(tiny_regression_dir, tmp_path / "reg"))
    data = _regression_data(tmp_path / "held.npz", 1500, 12)
    argv = [
        "calibrate",
        str(reg),
        "--data",
        str(data),
        "--target-rmse",
        "3.5",
        "--metric",
        "std",
        "--samples",
        "10",
    ]
    assert main(argv) == 0
    cal = read_manifest(reg).calibration
    assert cal is not None and cal["target_rmse"] == 3.5
    assert cal["retained_rmse"] <= cal["retained_rmse_upper_bound"] <= 3.5


def test_rows_of_the_wrong_width_are_a_clear_error(
    tiny_classifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "bad.npz"
    np.savez(data, x=np.zeros((5, 3)), y=np.zeros(5))
    argv = ["evaluate", str(tiny_classifier_dir), "--data", str(data), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "expected N rows of shape [4]" in capsys.readouterr().err


def test_serve_refuses_bad_settings_naming_the_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before anything starts: a field's problem, then a problem across two settings.
    monkeypatch.setenv("MCDROP_ENGINE_WORKERS", "0")
    assert main(["serve"]) == 2
    assert "MCDROP_ENGINE_WORKERS: Input should be greater than or equal to 1" in (
        capsys.readouterr().err
    )
    monkeypatch.setenv("MCDROP_ENGINE_WORKERS", "2")
    monkeypatch.setenv("MCDROP_ENGINE", "onnx")
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings: MCDROP_ENGINE_WORKERS above 1 needs MCDROP_ENGINE=torch" in err
    assert "MCDROP_:" not in err


def test_serve_refuses_a_model_folder_naming_its_parent(
    tiny_regression_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = Path(shutil.copytree(tiny_regression_dir, tmp_path / "models" / "toy"))
    assert main(["serve", "--model-dir", str(one)]) == 2
    err = capsys.readouterr().err
    assert f"'{one}' is one model's folder (it holds model.json)" in err
    assert f"use --model-dir {one.parent}" in err


def test_calibrate_rmse_target_not_met_speaks_in_rmse(
    tiny_regression_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reg = Path(shutil.copytree(tiny_regression_dir, tmp_path / "reg"))
    data = _regression_data(tmp_path / "held.npz", 200, 13)
    argv = [
        "calibrate",
        str(reg),
        "--data",
        str(data),
        "--target-rmse",
        "0.01",
        "--metric",
        "std",
        "--samples",
        "10",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "retained RMSE <= 0.01" in err  # the user's units, not the rescaled squared error
    assert "retained risk" not in err

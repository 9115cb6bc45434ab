"""A tiny run of `mcdrop bench uci` on a synthetic yacht-like set written in Gal's layout.

Never reads ../shared: the data, splits and grids are made here in tmp_path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.training.uci.data import DataLayoutError, load_dataset, resolve_data_dir
from service.training.uci.protocol import ProtocolConfig, run_dataset
from service.training.uci.report import passes

NOISE = 0.5


def _write_dataset(root: Path, name: str = "yacht", rows: int = 160, splits: int = 2) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4))
    y = 3 * x[:, 0] - 2 * np.abs(x[:, 1]) + x[:, 2] * x[:, 3] + 10 + NOISE * rng.normal(size=rows)
    x[:, 3] = 1.0  # a constant column: its std must be taken as 1, not divided by
    folder = root / name
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.txt", np.column_stack([x, y]))
    np.savetxt(folder / "index_features.txt", np.arange(4), fmt="%d")
    np.savetxt(folder / "index_target.txt", [4], fmt="%d")
    for i in range(splits):
        perm = rng.permutation(rows)
        np.savetxt(folder / f"index_train_{i}.txt", perm[: rows * 9 // 10], fmt="%d")
        np.savetxt(folder / f"index_test_{i}.txt", perm[rows * 9 // 10 :], fmt="%d")
    (folder / "n_splits.txt").write_text(f"{splits}\n")
    (folder / "n_hidden.txt").write_text("16\n")
    (folder / "n_epochs.txt").write_text("6\n")
    (folder / "dropout_rates.txt").write_text("0.01\n0.1\n")
    (folder / "tau_values.txt").write_text("0.5\n4.0\n")
    return root


def test_one_split_of_a_tiny_set_gives_finite_figures_in_a_loose_band(tmp_path: Path) -> None:
    ds = load_dataset(_write_dataset(tmp_path), "yacht", max_splits=1)
    assert ds.n_splits == 1 and ds.x.shape == (160, 4)
    cfg = ProtocolConfig(batch_size=16, val_samples=64, test_samples=500)
    r = run_dataset(ds, cfg)
    (split,) = r["splits"]
    assert (split["dropout_rate"], split["tau"]) in {
        (g["dropout_rate"], g["tau"]) for g in r["grid"]
    }
    assert len(split["val_ll"]) == 4 and all(math.isfinite(v) for v in split["val_ll"])
    y_std = float(np.std(ds.y))
    assert (split["dropout_rate_1x"], split["tau_1x"]) in {
        (g["dropout_rate"], g["tau"]) for g in r["grid"]
    }
    assert r["search_epochs"] == 60 and len(split["val_ll_1x"]) == 4
    for key in ("1x", "10x", "10x_search1x"):
        rmse, ll = split[f"rmse_{key}"], split[f"ll_{key}"]
        # Loose band: better than predicting nothing (RMSE 10 + noise would be ~10.5) and no
        # better than the noise floor; LL between "hopeless" and the noise's own density.
        assert NOISE * 0.5 < rmse < 1.5 * y_std, (key, rmse)
        assert -25 < ll < -0.5 * math.log(2 * math.pi * NOISE**2) + 0.5, (key, ll)
    # Ten times the epochs on this easy function fits better, whichever search chose.
    assert split["rmse_10x"] < split["rmse_1x"] and split["rmse_10x_search1x"] < split["rmse_1x"]
    assert r["epochs_10x"] == 60 and r["summary"]["10x"]["rmse_se"] == 0.0


def test_cli_writes_the_json_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _write_dataset(tmp_path / "uci")
    out = tmp_path / "results" / "uci.json"
    code = main(
        [
            "bench",
            "uci",
            "--data-dir",
            str(root),
            "--datasets",
            "yacht",
            "--splits",
            "2",
            "--batch-size",
            "32",
            "--val-samples",
            "32",
            "--test-samples",
            "200",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["complete"] is True and report["wall_time_s"] > 0
    assert {"platform", "cpu", "torch"} <= set(report["machine"])
    (ds,) = report["datasets"]
    assert len(ds["splits"]) == 2 and ds["n_hidden"] == 16
    assert set(report["targets_10x"]["yacht"]) == {"rmse", "ll"}
    printed = capsys.readouterr().out
    assert "| yacht | 2 |" in printed and "0.72 ± 0.06" in printed


def test_missing_data_dir_names_the_expected_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(DataLayoutError, match=r"index_features\.txt"):
        resolve_data_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataLayoutError, match=r"yacht/data\.txt"):
        load_dataset(tmp_path / "empty", "yacht")
    assert main(["bench", "uci", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "expected DIR/<dataset>/" in capsys.readouterr().err


def test_pass_rule_allows_two_published_standard_errors() -> None:
    ok = {"10x": {"rmse_mean": 0.72 + 2 * 0.06, "rmse_se": 0.1, "ll_mean": -1.40, "ll_se": 0.1}}
    assert passes("yacht", ok) == {"rmse": True, "ll": True}
    bad = {"10x": {"rmse_mean": 0.85, "rmse_se": 0.0, "ll_mean": -1.41, "ll_se": 0.0}}
    assert passes("yacht", bad) == {"rmse": False, "ll": False}
    assert passes("unknown", ok) is None


def test_the_default_data_folder_sits_beside_the_repository() -> None:
    from service.training.uci.data import DEFAULT_DATA_DIR

    repo = Path(__file__).resolve().parents[3]
    assert (repo / "pyproject.toml").is_file()
    assert repo.parent / "shared" / "data" / "uci" == DEFAULT_DATA_DIR

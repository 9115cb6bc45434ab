"""The tuned UCI protocol on synthetic sets in Gal's layout (never reads ../shared)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from service.cli import main
from service.training.uci.data import QUICK_DATASETS, load_dataset
from service.training.uci.tuned import TunedConfig, run_tuned, search_config
from tests.training.uci.test_uci_bench import _write_dataset

FAST = TunedConfig(
    budget=3,
    per_round=1,
    checkpoints=3,
    val_samples=50,
    test_samples=200,
    min_steps=0,
    batch_size=16,
)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _choice(r: dict[str, object]) -> list[tuple[object, ...]]:
    splits = r["splits"]
    assert isinstance(splits, list)
    return [(s["dropout"], s["tau"], s["epochs"], s["points"]) for s in splits]


def test_poisoned_test_targets_leave_every_choice_unchanged(tmp_path: Path) -> None:
    ds = load_dataset(_write_dataset(tmp_path), "yacht", max_splits=1)
    clean = run_tuned(ds, FAST)
    y = ds.y.copy()
    y[ds.test_splits[0]] = 1e6  # were any test row read by the search, the choice would move
    poisoned = run_tuned(replace(ds, y=y), FAST)
    assert _choice(poisoned) == _choice(clean)
    assert poisoned["splits"][0]["rmse_tuned"] > 1e5 > clean["splits"][0]["rmse_tuned"]


def test_a_tau_range_whose_edge_wins_widens_until_tau_is_interior(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path)
    # The noise (std 0.5) wants tau near 4; the first bracket stops at 0.02.
    (root / "yacht" / "tau_values.txt").write_text("0.01\n0.02\n")
    ds = load_dataset(root, "yacht", max_splits=1)
    r = run_tuned(ds, FAST)
    (split,) = r["splits"]
    assert split["tau_edge"] is None and split["tau"] > 0.02 * 10
    chosen = next(p for p in r["search_points"][0] if p["dropout"] == split["dropout"])
    assert len(chosen["tau_brackets"]) > 1 and chosen["tau_brackets"][0] == [0.01, 0.02]
    # Sanity: the widened tau is where the likelihood peaks, not an arbitrary edge: with a small
    # spread between passes the Gaussian MLE of tau is 1/MSE on the validation rows.
    mse = split["val_rmse"] ** 2
    assert 0.5 / mse < split["tau"] < 2 / mse


def test_quick_tuned_run_with_the_ensemble_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "uci"
    for name in QUICK_DATASETS:
        _write_dataset(root, name=name, rows=80, splits=1)
    out = tmp_path / "tuned.json"
    code = main(
        [
            "bench",
            "uci",
            "--protocol",
            "tuned",
            "--baseline",
            "ensemble",
            "--quick",
            "--data-dir",
            str(root),
            "--splits",
            "1",
            "--budget",
            "2",
            "--epochs",
            "2",
            "--test-samples",
            "100",
            "--batch-size",
            "16",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["complete"] is True and report["wall_time_s"] > 0
    assert report["datasets_run"] == list(QUICK_DATASETS) and report["datasets_not_run"] == []
    for r in report["datasets"]:
        assert set(r["summary"]) == {"tuned", "ensemble"}
        assert all(np.isfinite(v) for v in r["summary"]["ensemble"].values())
        assert r["splits"][0]["points"] == 2
    assert report["counts"]["better_nll_than_deep_ensembles"].endswith("of 5")
    printed = capsys.readouterr().out
    assert "| yacht | 1 |" in printed and "NLL our ensemble" in printed


@pytest.mark.parametrize("flag", [["--baseline", "ensemble"], ["--min-steps", "100"]])
def test_tuned_only_flags_are_refused_with_the_grid_protocol(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: list[str]
) -> None:
    root = _write_dataset(tmp_path / "uci")
    assert main(["bench", "uci", "--data-dir", str(root), *flag]) == 2
    assert "--protocol tuned" in capsys.readouterr().err


def test_min_steps_sets_the_epoch_cap_of_a_small_set(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "uci", name="yacht", rows=80, splits=1)
    out = tmp_path / "tuned.json"
    args = ["bench", "uci", "--protocol", "tuned", "--data-dir", str(root), "--datasets", "yacht"]
    args += ["--budget", "2", "--epochs", "1", "--test-samples", "50", "--batch-size", "16"]
    assert main([*args, "--min-steps", "300", "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())["datasets"]
    floored = TunedConfig(epochs=1, batch_size=16, min_steps=300)
    expected = search_config(load_dataset(root, "yacht"), floored).epochs
    # 10 x 1 epoch is far below 300 steps, so the floor, passed through, sets the cap.
    assert r["config"]["min_steps"] == 300
    assert r["epoch_cap"] == expected > 10


def test_large_sets_test_the_searched_networks_without_a_refit(tmp_path: Path) -> None:
    ds = load_dataset(_write_dataset(tmp_path), "yacht", max_splits=1)
    cfg = replace(FAST, baseline="ensemble")
    refitted = run_tuned(ds, cfg)
    kept = run_tuned(ds, replace(cfg, refit_max_rows=len(ds.train_splits[0]) - 1))
    assert refitted["refit"] is True and kept["refit"] is False
    # The same search chose the same things; only the tested networks differ.
    assert _choice(kept) == _choice(refitted)
    a, b = refitted["splits"][0], kept["splits"][0]
    assert a["ensemble_epochs"] == b["ensemble_epochs"]
    assert a["rmse_tuned"] != b["rmse_tuned"] and a["rmse_ensemble"] != b["rmse_ensemble"]
    assert all(
        np.isfinite(b[k]) for k in ("rmse_tuned", "ll_tuned", "rmse_ensemble", "ll_ensemble")
    )

"""Resolved referrals as held-out data (resolved_dataset, `mcdrop referrals export`) and the
accuracy report (`mcdrop referrals report`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from service.artifacts.data import read_npz
from service.cli import main
from service.referrals.export import resolved_dataset
from service.referrals.store import ReferralStore
from service.serving.results import ClassificationResult
from tests.referrals.conftest import clf_row, minutes, reg_row


def _resolved_classifier_items(store: ReferralStore) -> list[dict[str, object]]:
    """Four resolved (model predicted class 1 each time; people said 1, 1, 0, 2), one hash-only
    resolved, one pending."""
    rows = [clf_row(x=[float(i)] * 4, created_at=minutes(i)) for i in range(4)]
    hashed = clf_row(input=None, created_at=minutes(5))
    pending = clf_row(created_at=minutes(6))
    store.add([*rows, hashed, pending])
    for r, label in zip(rows, [1, 1, 0, 2], strict=True):
        store.resolve(r["id"], "ann", label=label)
    store.resolve(hashed["id"], "ann", label=1)
    return rows


def test_classifier_dataset(store: ReferralStore, database_url: str) -> None:
    _resolved_classifier_items(store)
    x, y = resolved_dataset(database_url, "clf")
    assert x.shape == (4, 4) and x.dtype == np.float64
    assert x[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]  # oldest first; the hash-only one skipped
    assert y.tolist() == [1.0, 1.0, 0.0, 2.0]


def test_regression_dataset_and_version_filter(store: ReferralStore, database_url: str) -> None:
    a, b = reg_row(model_version="1"), reg_row(model_version="2", created_at=minutes(1))
    store.add([a, b])
    store.resolve(a["id"], "ann", value=[11.0])
    store.resolve(b["id"], "ann", value=[7.0])
    x, y = resolved_dataset(database_url, "reg")
    assert x.shape == (2, 3) and y.tolist() == [11.0, 7.0]
    assert resolved_dataset(database_url, "reg", version="2")[1].tolist() == [7.0]
    with pytest.raises(ValueError, match="no resolved referral"):
        resolved_dataset(database_url, "clf")


def test_cli_export_writes_an_npz_training_reads(
    store: ReferralStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _resolved_classifier_items(store)
    url = str(store.engine.url.render_as_string(hide_password=False))
    out = tmp_path / "held_out.npz"
    assert (
        main(["referrals", "export", "models/clf", "--database-url", url, "--out", str(out)]) == 0
    )
    assert json.loads(capsys.readouterr().out)["rows"] == 4
    data = read_npz(out)
    assert data.x.shape == (4, 4) and data.y.tolist() == [1.0, 1.0, 0.0, 2.0]


def test_cli_report_accuracy(store: ReferralStore, capsys: pytest.CaptureFixture[str]) -> None:
    _resolved_classifier_items(store)
    url = str(store.engine.url.render_as_string(hide_password=False))
    assert main(["referrals", "report", "clf", "--database-url", url]) == 0
    report = json.loads(capsys.readouterr().out)
    # Five resolved (the hash-only one counts: the report needs no input); predicted 1 each
    # time, people said 1, 1, 0, 2, 1: three of five right.
    assert report["resolved"] == 5
    assert report["overall"]["accuracy"] == pytest.approx(3 / 5)
    assert report["overall"]["accuracy_se"] == pytest.approx(math.sqrt(0.6 * 0.4 / 5))
    assert report["by_version"]["1"]["n"] == 5


def test_regression_report(store: ReferralStore, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = reg_row(), reg_row()  # mean 10, std 2
    store.add([a, b])
    store.resolve(a["id"], "ann", value=[13.0])  # error 3: within 2 std
    store.resolve(b["id"], "ann", value=[5.0])  # error -5: outside
    url = str(store.engine.url.render_as_string(hide_password=False))
    assert main(["referrals", "report", "reg", "--database-url", url]) == 0
    overall = json.loads(capsys.readouterr().out)["overall"]
    assert overall["mae"] == pytest.approx(4.0)
    assert overall["rmse"] == pytest.approx(math.sqrt((9 + 25) / 2))
    assert overall["within_2_std"] == pytest.approx(0.5)


def test_cli_refuses_a_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["referrals", "report", "clf", "--database-url", url]) == 2
    assert "no referral store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_calibrate_from_referrals_uses_and_reports_the_resolved_items(
    tiny_classifier_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """People's labels flow back: `mcdrop calibrate --from-referrals` takes resolved referrals
    as held-out rows (with or without a --data file) and prints the model's accuracy on them."""
    import shutil

    from service.artifacts.manifest import read_manifest
    from service.serving.model import load_model

    folder = Path(shutil.copytree(tiny_classifier_dir, tmp_path / "clf"))
    url = f"sqlite:///{tmp_path / 'referrals.db'}"
    store = ReferralStore.open(url)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 4))
    truth = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)  # the fixture's rule
    rows = [clf_row(x=xi.tolist(), created_at=minutes(i)) for i, xi in enumerate(x)]
    store.add(rows)
    for r, label in zip(rows, truth.tolist(), strict=True):
        store.resolve(r["id"], "ann", label=label)
    store.close()

    argv = [
        "calibrate",
        str(folder),
        "--from-referrals",
        "--database-url",
        url,
        "--max-referral-rate",
        "0.5",
        "--delta",
        "0.2",
        "--samples",
        "10",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    p = load_model(folder).predict(x, samples=10, seed=0)
    assert isinstance(p, ClassificationResult)
    acc = float(np.mean(p.label == truth))
    assert f"resolved referrals: 60 rows; model accuracy on them {acc:.3f}" in out
    cal = read_manifest(folder).calibration
    assert cal is not None and cal["n"] == 60 and cal["referrals"] == 60
    assert len(cal["referrals_sha256"]) == 64

    assert main(["calibrate", str(folder), "--max-referral-rate", "0.5"]) == 2  # no data at all

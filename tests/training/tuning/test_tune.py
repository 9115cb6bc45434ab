"""`mcdrop tune` on data whose noise is known: tau lands near 1/sigma^2; the folder serves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from service.artifacts.data import Dataset
from service.cli import main
from service.serving.model import load_model
from service.training.stacked import mc_samples
from service.training.train import validation_split
from service.training.tuning.search import mc_log_likelihood_of_tau
from service.training.tuning.tune import Scaling, TuneConfig, tune

SIGMA = 0.3


def _data(n: int = 600, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, size=(n, 2))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] + SIGMA * rng.normal(size=n)
    return Dataset(x, y, ["a", "b"], ["y"])


CFG = TuneConfig(
    epochs=30,
    lr=1e-2,
    budget=4,
    dropout_start=(0.005, 0.02, 0.08),
    checkpoints=4,
    val_fraction=0.25,
)


def test_tau_lands_within_a_factor_of_1_5_of_the_noise_precision(tmp_path: Path) -> None:
    ds = _data()
    result = tune(ds, CFG, tmp_path / "m")
    chosen = result.trace["search"]["chosen"]
    # Likelihood-optimal tau for Gaussian noise of std sigma is 1/sigma^2. On 150 validation
    # rows the noise variance alone is estimated to ~sqrt(2/150) = 12% (1 SE); the factor 1.5
    # leaves room for that (3 SE) and for the fit's own small error.
    target = 1.0 / SIGMA**2
    assert target / 1.5 < chosen["tau"] < target * 1.5, chosen
    assert chosen["tau_edge"] is None
    assert result.manifest.tau == chosen["tau"]

    # A deliberately bad fixed tau on the same network and validation passes scores worse.
    tr, va = validation_split(len(ds.x), CFG.val_fraction, CFG.seed)
    sc = Scaling.of(ds.x[tr], ds.y[tr])
    model = result.outcome.chosen.model
    assert model is not None
    x_val = torch.from_numpy(sc.x(ds.x[va]))
    gen = torch.Generator().manual_seed(5)
    ys = torch.cat(list(mc_samples(model, 0, x_val, 400, gen)))[:, :, 0].double().numpy()
    ll = mc_log_likelihood_of_tau(ys * sc.y_std + sc.y_mean, ds.y[va])
    good = ll(chosen["tau"])
    for bad in (target / 10, target * 10):
        # The gap at 10x is ~1 nat per row, far beyond the MC noise of 400 passes.
        assert ll(bad) < good - 0.3, (bad, ll(bad), good)


def test_the_folder_loads_and_serves_with_the_chosen_settings(tmp_path: Path) -> None:
    ds = _data(n=300, seed=1)
    cfg = TuneConfig(epochs=20, budget=3, dropout_start=(0.01, 0.1), checkpoints=2)
    result = tune(ds, cfg, tmp_path / "m")
    trace = json.loads((tmp_path / "m" / "tuning.json").read_text())
    assert len(trace["search"]["points"]) == 3
    assert all(math.isfinite(p["val_log_likelihood"]) for p in trace["search"]["points"])
    model = load_model(tmp_path / "m", device="cpu")
    assert model.manifest.dropout is not None
    assert model.manifest.dropout.hidden_rate == trace["search"]["chosen"]["dropout"]
    # The served network is the searched one: its weight-scaled pass (dropout off, weights as
    # trained: inverted dropout scales only the kept units) is relu(x W1 + b1) W2 + b2.
    stack = result.outcome.chosen.model
    assert stack is not None
    sc = Scaling.of(
        *(np.asarray(a)[validation_split(300, cfg.val_fraction, 0)[0]] for a in (ds.x, ds.y))
    )
    x = ds.x[:5]
    with torch.no_grad():
        h = torch.relu(torch.from_numpy(sc.x(x)) @ stack.w1[0] + stack.b1[0])
        want = (h @ stack.w2[0] + stack.b2[0])[:, 0].numpy()
    got = model.predict_standard(x)[:, 0]
    np.testing.assert_allclose(got, want * sc.y_std + sc.y_mean, rtol=1e-4, atol=1e-4)


def test_cli_writes_the_folder_and_evaluate_plots_the_search(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = _data(n=200, seed=2)
    csv = tmp_path / "d.csv"
    np.savetxt(csv, np.column_stack([ds.x, ds.y]), delimiter=",", header="a,b,y", comments="")
    out = tmp_path / "houses"
    code = main(
        [
            "tune",
            str(csv),
            "--task",
            "regression",
            "--target",
            "y",
            "--out",
            str(out),
            "--epochs",
            "10",
            "--budget",
            "2",
            "--dropout-start",
            "0.01",
            "0.1",
            "--checkpoints",
            "2",
            "--val-samples",
            "50",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["name"] == "houses" and printed["points"] == 2
    assert {"model.json", "weights.safetensors", "tuning.json"} <= {p.name for p in out.iterdir()}
    code = main(
        [
            "evaluate",
            str(out),
            "--data",
            str(csv),
            "--target",
            "y",
            "--out",
            str(tmp_path / "ev"),
            "--samples",
            "20",
        ]
    )
    assert code == 0
    assert (tmp_path / "ev" / "tuning.png").stat().st_size > 1000
    assert "tuning.png" in json.loads((tmp_path / "ev" / "report.json").read_text())["plots"]


def test_bad_options_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = _data(n=50)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=ds.x, y=ds.y)
    args = ["tune", str(npz), "--task", "regression", "--out", str(tmp_path / "m")]
    assert main([*args, "--tau-range", "5", "1"]) == 2
    assert "--tau-range needs 0 < LO < HI" in capsys.readouterr().err
    np.savez(npz, x=ds.x, y=np.column_stack([ds.y, ds.y]))
    assert main(args) == 2
    assert "one target column" in capsys.readouterr().err

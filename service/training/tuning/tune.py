"""`mcdrop tune`: a regression network whose dropout rate, tau and epochs were chosen on held-out
rows.

The data are split once (the `mcdrop train` split): the search trains on the first part and
judges every candidate by validation log-likelihood on the second. The chosen network is written
as `mcdrop train` writes one (model.json + weights.safetensors), with tuning.json beside it
holding every point tried. With `refit`, the chosen settings are trained again on all rows.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from service.artifacts.data import Dataset
from service.artifacts.manifest import (
    Manifest,
    Normalization,
    WeightsRef,
)
from service.maths import uncertainty
from service.training.train import save_artifact, validation_split
from service.training.tuning.search import Axis
from service.training.tuning.stack_models import (
    dropout_spec,
    mlp_architecture,
    refit,
    to_sequential,
)
from service.training.tuning.stacked_search import Problem, SearchConfig, SearchOutcome, search

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
TUNING_NAME = "tuning.json"
# Standardised targets: noise between 100% and 3% of the target's std is the first tau bracket.
DEFAULT_TAU_RANGE_STD = (1.0, 1000.0)


@dataclass(frozen=True)
class TuneConfig:
    name: str = "model"
    hidden: int = 50
    epochs: int = 200  # the cap; early stopping picks the count below it
    early_stopping: bool = True
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.2
    length_scale: float = 1e-2
    budget: int = 8
    dropout_start: tuple[float, ...] = (0.005, 0.02, 0.08, 0.3)
    dropout_bounds: tuple[float, float] = (1e-3, 0.5)
    tau_range: tuple[float, float] | None = None  # target units; None: DEFAULT_TAU_RANGE_STD
    val_samples: int = 200
    checkpoints: int = 8
    refit: bool = False
    input_scale: float = 1.0
    default_samples: int = 100
    max_samples: int = 10_000


@dataclass(frozen=True)
class Scaling:
    x_mean: NDArray[np.float64]
    x_std: NDArray[np.float64]
    y_mean: float
    y_std: float

    @classmethod
    def of(cls, x: NDArray[np.float64], y: NDArray[np.float64]) -> Scaling:
        x_std = x.std(0)
        return cls(
            x.mean(0), np.where(x_std > 0, x_std, 1.0), float(y.mean()), float(y.std()) or 1.0
        )

    def x(self, x: NDArray[np.float64]) -> NDArray[np.float32]:
        return ((x - self.x_mean) / self.x_std).astype(np.float32)

    def y(self, y: NDArray[np.float64]) -> NDArray[np.float32]:
        return ((y - self.y_mean) / self.y_std).astype(np.float32)


def set_threads(threads: int) -> None:
    """Sets torch's thread count for the search (stacks of small networks run best on one)."""
    if threads < 1:
        raise ValueError("--threads must be at least 1")
    torch.set_num_threads(threads)


def _check(ds: Dataset, cfg: TuneConfig) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = np.asarray(ds.x, np.float64) * cfg.input_scale
    y = np.asarray(ds.y, np.float64)
    if x.ndim != 2:
        raise ValueError(f"tune needs tabular inputs (rows, features), got shape {list(x.shape)}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(
            f"tune fits one target column, got {y.shape[1]}: tune each target on its own"
        )
    if not 0 < cfg.val_fraction < 1 or round(len(x) * cfg.val_fraction) < 2:
        raise ValueError(
            f"--val-fraction must leave at least 2 validation rows and some training rows "
            f"(got {cfg.val_fraction} of {len(x)} rows)"
        )
    if cfg.budget < 1 or cfg.epochs < 1:
        raise ValueError("--budget and --epochs must be at least 1")
    if cfg.tau_range is not None and not 0 < cfg.tau_range[0] < cfg.tau_range[1]:
        raise ValueError(f"--tau-range needs 0 < LO < HI, got {list(cfg.tau_range)}")
    lo, hi = cfg.dropout_bounds
    if not all(lo <= p <= hi for p in cfg.dropout_start):
        raise ValueError(
            f"--dropout-start values must lie in [{lo}, {hi}], got {list(cfg.dropout_start)}"
        )
    return x, y


def search_config(cfg: TuneConfig) -> SearchConfig:
    return SearchConfig(
        dropout_start=cfg.dropout_start,
        dropout_axis=Axis(*cfg.dropout_bounds),
        budget=cfg.budget,
        epochs=cfg.epochs,
        early_stopping=cfg.early_stopping,
        checkpoints=cfg.checkpoints,
        val_samples=cfg.val_samples,
        hidden=cfg.hidden,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        length_scale=cfg.length_scale,
        seed=cfg.seed,
    )


@dataclass
class TuneResult:
    manifest: Manifest
    net: nn.Sequential
    outcome: SearchOutcome
    trace: dict[str, Any]


def tune(ds: Dataset, cfg: TuneConfig, out: Path | None = None) -> TuneResult:
    """Search, then write the chosen network and tuning.json to `out`."""
    x, y = _check(ds, cfg)
    tr, va = validation_split(len(x), cfg.val_fraction, cfg.seed)
    sc = Scaling.of(x[tr], y[tr])
    tau_range = cfg.tau_range or tuple(t / sc.y_std**2 for t in DEFAULT_TAU_RANGE_STD)
    scfg = search_config(cfg)
    (outcome,) = search([_problem(sc, x, y, tr, va, tau_range)], scfg)
    best = outcome.chosen.best
    assert best is not None and outcome.chosen.model is not None
    model = outcome.chosen.model
    if cfg.refit:  # the chosen settings on every row, tau as validated
        sc = Scaling.of(x, y)
        model = refit(
            [sc.x(x)], [sc.y(y)], [1 - outcome.chosen.dropout], [best.tau], [best.epoch], scfg
        )
    net = to_sequential(model)

    # Placeholder threshold (as `mcdrop train`): the 90th percentile of the validation std.
    samples = _mc(net, sc.x(x[va]), cfg.default_samples, cfg.seed) * sc.y_std + sc.y_mean
    mom = uncertainty.regression_moments(samples[:, :, None], best.tau)
    threshold = float(np.quantile(mom.std[:, 0], 0.9))
    tuned_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    trace = {
        "search": {**outcome.trace(), "tau_range_start": list(tau_range)},
        "config": {**asdict(cfg), "val_rows": len(va), "fit_rows": len(tr)},
        "refit": cfg.refit,
        "tuned_at": tuned_at,
    }
    n_train = len(x) if cfg.refit else len(tr)
    manifest = _manifest(ds, cfg, sc, outcome, threshold, (n_train, len(va)), tuned_at)
    if out is not None:
        save_artifact(out, manifest, net)
        (out / TUNING_NAME).write_text(json.dumps(trace, indent=1) + "\n")
    return TuneResult(manifest, net, outcome, trace)


def _problem(
    sc: Scaling,
    x: FloatArray,
    y: FloatArray,
    tr: IntArray,
    va: IntArray,
    tau_range: Sequence[float],
) -> Problem:
    """The search's rows, standardised by the fit rows' scaling; tau starts mid-bracket."""
    return Problem(
        fit_x=sc.x(x[tr]),
        fit_y=sc.y(y[tr]),
        val_x=sc.x(x[va]),
        val_y=sc.y(y[va]).astype(np.float64),
        y_std=sc.y_std,
        tau_range=(float(tau_range[0]), float(tau_range[1])),
        tau_start=math.sqrt(tau_range[0] * tau_range[1]),
    )


def _manifest(
    ds: Dataset,
    cfg: TuneConfig,
    sc: Scaling,
    outcome: SearchOutcome,
    threshold: float,
    rows: tuple[int, int],
    trained_at: str,
) -> Manifest:
    """The chosen network's manifest, as `mcdrop train` writes one. rows: (trained, validation)."""
    best = outcome.chosen.best
    assert best is not None
    d = len(sc.x_mean)
    return Manifest(
        name=cfg.name,
        task="regression",
        architecture=mlp_architecture(d, cfg.hidden),
        dropout=dropout_spec(outcome.chosen.dropout),
        tau=best.tau,
        input_shape=[d],
        feature_names=ds.feature_names,
        output_names=ds.target_names or ["y"],
        normalization=Normalization(
            input_scale=cfg.input_scale,
            x_mean=[float(v) for v in sc.x_mean],
            x_std=[float(v) for v in sc.x_std],
            y_mean=[sc.y_mean],
            y_std=[sc.y_std],
        ),
        default_samples=cfg.default_samples,
        max_samples=cfg.max_samples,
        uncertainty_metric="std",
        threshold=threshold,
        training={
            "trainer": "mcdrop tune",
            **{k: v for k, v in asdict(cfg).items() if k != "name"},
            "dropout": outcome.chosen.dropout,
            "epochs_trained": best.epoch,
            "tau_for_weight_decay": best.tau if cfg.refit else outcome.chosen.tau_weight_decay,
            "tau_source": "validation_search",
            "n_train": rows[0],
            "n_val": rows[1],
            "threshold_source": "placeholder: 90th percentile of held-out uncertainty",
            "trained_at": trained_at,
            "torch": torch.__version__,
        },
        # The search network's validation figures: after a refit the validation rows are
        # training rows, so these are the honest held-out ones.
        metrics={
            "rmse": best.rmse,
            "log_likelihood": best.log_likelihood,
            "n_eval": float(rows[1]),
        },
        weights=WeightsRef(sha256="0" * 64),
    )


def _mc(net: nn.Sequential, x: NDArray[np.float32], samples: int, seed: int) -> NDArray[np.float64]:
    """(T, N) MC passes with dropout on, for the placeholder threshold."""
    torch.manual_seed(seed)
    net.train()
    with torch.no_grad():
        xt = torch.from_numpy(x).expand(samples, *x.shape).reshape(-1, x.shape[1])
        out: NDArray[np.float64] = net(xt).view(samples, len(x)).double().numpy()
    net.eval()
    return out


def summary(result: TuneResult) -> dict[str, Any]:
    chosen = result.trace["search"]["chosen"]
    return {"name": result.manifest.name, **chosen, "points": len(result.trace["search"]["points"])}

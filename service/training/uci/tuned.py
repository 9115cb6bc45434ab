"""One dataset through the tuned protocol: per split, `mcdrop tune`'s search, a refit, the test.

Per split, the first 80% of the training rows fit the candidates and the last 20% judge them (as
the grid protocol). The dropout grid starts at dropout_rates.txt and the tau bracket at the range
of tau_values.txt; both move out when an edge wins. The epoch count is chosen by early stopping
within 10 x n_epochs (the 10x column's length) or 80,000 Adam steps, whichever is longer. On
sets of at most refit_max_rows training rows the choice is refitted on all training rows for the
chosen epochs, with the validated tau; larger sets test the search's own network. Either way
the test uses T = 10,000 passes, and test rows are read only after every choice is made.

With baseline "ensemble", each split also gets a deep ensemble (ensemble.py) on the same rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from service.training.stacked import StackedMLP
from service.training.tuning.search import Axis
from service.training.tuning.stack_models import concat, refit
from service.training.tuning.stacked_search import Problem, SearchConfig, SearchOutcome, search
from service.training.uci.data import UciDataset
from service.training.uci.ensemble import EnsembleConfig, EnsembleResult, run_ensemble
from service.training.uci.scoring import Standardised, score, standardise, summarise


@dataclass(frozen=True)
class TunedConfig:
    budget: int = 8  # networks trained per split in the search
    per_round: int = 2
    epoch_multiplier: int = 10  # the cap: n_epochs x this ...
    # ... or enough epochs for this many Adam steps, if more: on the small sets 10 x n_epochs
    # of a few minibatches stop far from convergence (docs/tuning.md).
    min_steps: int = 80_000
    checkpoints: int = 6
    val_fraction: float = 0.2
    val_samples: int = 200
    test_samples: int = 10_000
    batch_size: int = 32
    lr: float = 1e-3
    length_scale: float = 1e-2
    seed: int = 0
    refit: bool = True
    # Refit only sets with at most this many training rows: on the small sets the 20% held out
    # for validation is a large share of the data; on the large ones it costs little accuracy
    # and the refit would double the training time (docs/tuning.md).
    refit_max_rows: int = 5_000
    epochs: int | None = None  # None: n_epochs.txt (times epoch_multiplier)
    baseline: str | None = None  # "ensemble"
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)


def search_config(ds: UciDataset, cfg: TunedConfig) -> SearchConfig:
    epochs = (cfg.epochs if cfg.epochs is not None else ds.n_epochs) * cfg.epoch_multiplier
    n_fit = int((1 - cfg.val_fraction) * len(ds.train_splits[0]))
    epochs = max(epochs, math.ceil(cfg.min_steps / math.ceil(n_fit / cfg.batch_size)))
    return SearchConfig(
        dropout_start=tuple(ds.dropout_rates),
        dropout_axis=Axis(1e-3, 0.5),
        budget=cfg.budget,
        per_round=cfg.per_round,
        epochs=epochs,
        early_stopping=True,
        checkpoints=cfg.checkpoints,
        val_samples=cfg.val_samples,
        hidden=ds.n_hidden,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        length_scale=cfg.length_scale,
        seed=cfg.seed,
    )


def run_tuned(ds: UciDataset, cfg: TunedConfig) -> dict[str, Any]:
    t_start = time.perf_counter()
    scfg = search_config(ds, cfg)
    fits, problems, tau_range = _problems(ds, cfg)
    t0 = time.perf_counter()
    outcomes = search(problems, scfg)
    t_search = time.perf_counter() - t0
    t0 = time.perf_counter()
    fulls = [standardise(ds.x[tr], ds.y[tr]) for tr in ds.train_splits]
    refitted = refits(ds, cfg)
    final, norms = _refit(ds, refitted, scfg, outcomes, fits, fulls)
    t_refit = time.perf_counter() - t0
    ensemble = None
    t0 = time.perf_counter()
    if cfg.baseline == "ensemble":
        taus = [o.chosen.best.tau for o in outcomes if o.chosen.best]
        ensemble = run_ensemble(
            ds, problems, fulls if refitted else fits, taus, scfg, cfg.ensemble, refitted
        )
    t_ensemble = time.perf_counter() - t0
    t0 = time.perf_counter()
    splits = _test(ds, cfg, final, norms, outcomes, ensemble)
    t_test = time.perf_counter() - t0
    keys = ["tuned"] + (["ensemble"] if ensemble is not None else [])
    return {
        "dataset": ds.name,
        "protocol": "tuned",
        "n_splits": ds.n_splits,
        "n_hidden": ds.n_hidden,
        "epoch_cap": scfg.epochs,
        "refit": refitted,
        "dropout_start": list(ds.dropout_rates),
        "tau_range_start": list(tau_range),
        "splits": splits,
        "search_points": [o.trace()["points"] for o in outcomes],
        "summary": {k: summarise(splits, k) for k in keys},
        "edges": _edges(splits),
        "timing_s": {
            "search": t_search,
            "refit": t_refit,
            "ensemble": t_ensemble,
            "test": t_test,
            "total": time.perf_counter() - t_start,
        },
        "config": asdict(cfg),
    }


def refits(ds: UciDataset, cfg: TunedConfig) -> bool:
    """Whether the chosen models are retrained on all training rows (else the search's own
    networks, trained on the first 80%, are tested)."""
    return cfg.refit and len(ds.train_splits[0]) <= cfg.refit_max_rows


def _problems(
    ds: UciDataset, cfg: TunedConfig
) -> tuple[list[Standardised], list[Problem], tuple[float, float]]:
    """One search problem per split: the first 80% fit, the rest judge; tau starts in the range
    of tau_values.txt (widened around a single value)."""
    sizes = {len(tr) for tr in ds.train_splits}
    if len(sizes) != 1:
        raise ValueError(f"{ds.name}: splits of unequal size {sorted(sizes)} cannot share a stack")
    n_fit = int((1 - cfg.val_fraction) * sizes.pop())
    tau_lo, tau_hi = min(ds.tau_values), max(ds.tau_values)
    if tau_lo == tau_hi:
        tau_lo, tau_hi = tau_lo / 2, tau_hi * 2
    fits, problems = [], []
    for tr in ds.train_splits:
        fit, val = tr[:n_fit], tr[n_fit:]
        norm = standardise(ds.x[fit], ds.y[fit])
        fits.append(norm)
        problems.append(
            Problem(
                fit_x=norm.x,
                fit_y=norm.y,
                val_x=norm.inputs(ds.x[val]).numpy(),
                val_y=(ds.y[val] - norm.y_mean) / norm.y_std,
                y_std=norm.y_std,
                tau_range=(tau_lo, tau_hi),
                tau_start=float(np.sqrt(tau_lo * tau_hi)),
            )
        )
    return fits, problems, (tau_lo, tau_hi)


def _refit(
    ds: UciDataset,
    refitted: bool,
    scfg: SearchConfig,
    outcomes: list[SearchOutcome],
    fits: list[Standardised],
    fulls: list[Standardised],
) -> tuple[StackedMLP, list[Standardised]]:
    """Every split's choice refitted on all its training rows, side by side (or, without refit,
    the search's own networks); with the scaling each was trained under."""
    bests = [o.chosen.best for o in outcomes]
    assert all(b is not None for b in bests)
    if not refitted:
        return concat([o.chosen.model for o in outcomes if o.chosen.model is not None]), fits
    final = refit(
        [f.x for f in fulls],
        [f.y for f in fulls],
        [1 - o.chosen.dropout for o in outcomes],
        [b.tau for b in bests if b],
        [b.epoch for b in bests if b],
        scfg,
        phase=ds.name,
    )
    return final, fulls


def _test(
    ds: UciDataset,
    cfg: TunedConfig,
    final: StackedMLP,
    norms: list[Standardised],
    outcomes: list[SearchOutcome],
    ensemble: EnsembleResult | None,
) -> list[dict[str, Any]]:
    """The test rows, first read here."""
    gen = torch.Generator().manual_seed(cfg.seed)
    splits: list[dict[str, Any]] = []
    for s, te in enumerate(ds.test_splits):
        best = outcomes[s].chosen.best
        assert best is not None
        xt = norms[s].inputs(ds.x[te])
        rmse, ll = score(final, s, xt, ds.y[te], norms[s], best.tau, cfg.test_samples, gen)
        row: dict[str, Any] = {
            "split": s,
            "rmse_tuned": rmse,
            "ll_tuned": ll,
            **outcomes[s].trace()["chosen"],
            "points": len(outcomes[s].candidates),
            "n_train": len(ds.train_splits[s]),
            "n_test": len(te),
        }
        if ensemble is not None:
            e_rmse, e_ll = ensemble.test(s, ds.x[te], ds.y[te])
            row.update({"rmse_ensemble": e_rmse, "ll_ensemble": e_ll, **ensemble.chosen(s)})
        splits.append(row)
    return splits


def _edges(splits: list[dict[str, Any]]) -> dict[str, int]:
    """How many splits chose a value on an edge, per parameter (0 everywhere: all interior)."""
    return {
        "dropout": sum(s["dropout_edge"] is not None for s in splits),
        "tau": sum(s["tau_edge"] is not None for s in splits),
        "epochs_at_cap": sum(s["epochs_edge"] is not None for s in splits),
    }

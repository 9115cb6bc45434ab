"""One dataset through the paper's protocol: grid search on 80/20, refit, T = 10,000 test passes.

Per split (Gal's experiment.py): the first 80% of the training rows fit every (dropout, tau) grid
point and the last 20% score it by MC log-likelihood; the best point is refitted on all training
rows. All splits and grid points of a dataset train as one stack.

Snapshots make one long run serve as its shorter prefixes: a stack's state after n_epochs is
exactly what a separate n_epochs run with the same seed would give, since nothing in training
depends on the epoch count. So one search at search_multiplier x n_epochs yields both the n_epochs
choice (its snapshot) and the long choice, and one final stack yields both final lengths.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from service.training.stacked import StackData, StackedMLP, train_stacked
from service.training.uci.data import UciDataset
from service.training.uci.scoring import Standardised, score, standardise, summarise


@dataclass(frozen=True)
class ProtocolConfig:
    batch_size: int = 128  # Gal's net.py
    lr: float = 1e-3  # Keras' Adam default, as in Gal's code
    length_scale: float = 1e-2
    epoch_multiplier: int = 10
    # The 10x column searches with the final model's epochs, as Gal's published 10x runs did;
    # the 1x column uses the search's n_epochs snapshot (search and final both at n_epochs).
    search_multiplier: int = 10
    test_samples: int = 10_000
    # Validation passes per grid point: the protocol fixes T = 10,000 only for the test set; 12
    # grid points x 20% of the rows at T = 10,000 would cost 10x the whole test evaluation.
    val_samples: int = 1_000
    val_fraction: float = 0.2
    seed: int = 0
    epochs: int | None = None  # None: n_epochs.txt
    dropout_rates: list[float] | None = field(default=None)  # None: dropout_rates.txt
    tau_values: list[float] | None = field(default=None)  # None: tau_values.txt


def _generator(cfg: ProtocolConfig, name: str, phase: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{cfg.seed}/{name}/{phase}".encode()))


def _stack(norms: list[Standardised], repeat: int) -> StackData:
    return StackData(
        x=torch.from_numpy(np.stack([s.x for s in norms])),
        y=torch.from_numpy(np.stack([s.y for s in norms])[:, :, None]),
        group=torch.arange(len(norms)).repeat_interleave(repeat),
    )


def _weight_decay(
    keep: torch.Tensor, tau: torch.Tensor, n: int, cfg: ProtocolConfig
) -> torch.Tensor:
    """lambda = keep l^2 / (2 N tau), per model
    (service.maths.uncertainty.weight_decay_from_tau)."""
    return keep * cfg.length_scale**2 / (2.0 * n * tau)


@dataclass(frozen=True)
class _Plan:
    """A dataset's grid and epoch counts, and its rows per split: all fit, first part only."""

    grid: list[tuple[float, float]]  # (dropout rate, tau)
    epochs: int
    search_epochs: int
    n_train: int
    n_fit: int


@dataclass
class _Validated:
    """Validation LL and RMSE per (split, grid point), at the search's end and at n_epochs."""

    ll: NDArray[np.float64]
    rmse: NDArray[np.float64]
    ll_1x: NDArray[np.float64]
    rmse_1x: NDArray[np.float64]
    train_s: float
    validate_s: float


def run_dataset(ds: UciDataset, cfg: ProtocolConfig) -> dict[str, Any]:
    """Three columns from one search and one final stack (see the module docstring):

    1x: search and final at n_epochs (the paper's Table 1);
    10x: search and final at search_multiplier x and 10 x n_epochs (Gal's 10x runs);
    10x_search1x: the 1x choice trained for 10 x n_epochs (10x read literally: same choice, longer).
    The grid stack's state after n_epochs is exactly a separate n_epochs search (same seed,
    nothing depends on the epoch count), so the 1x choice costs one extra validation.
    """
    t_start = time.perf_counter()
    plan = _plan(ds, cfg)
    val = _grid_search(ds, cfg, plan)
    # The 1x choices are final models 0..S-1, the 10x choices S..2S-1.
    choices = [plan.grid[b] for b in val.ll_1x.argmax(axis=1)]
    choices += [plan.grid[b] for b in val.ll.argmax(axis=1)]
    fulls = [standardise(ds.x[tr], ds.y[tr]) for tr in ds.train_splits]
    t0 = time.perf_counter()
    final, final_1x = _train_final(ds, cfg, plan, fulls, choices)
    t_final_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    splits = _test(ds, cfg, plan, fulls, choices, (final_1x, final), val)
    t_test = time.perf_counter() - t0
    t_total = time.perf_counter() - t_start
    n_splits, epochs_10x = ds.n_splits, plan.epochs * cfg.epoch_multiplier
    row_passes = n_splits * (
        len(plan.grid) * plan.n_fit * plan.search_epochs + 2 * plan.n_train * epochs_10x
    )
    return {
        "dataset": ds.name,
        "n_splits": n_splits,
        "n_hidden": ds.n_hidden,
        "n_epochs": plan.epochs,
        "search_epochs": plan.search_epochs,
        "epochs_10x": epochs_10x,
        "grid": [{"dropout_rate": r, "tau": t} for r, t in plan.grid],
        "splits": splits,
        "summary": {key: summarise(splits, key) for key in ("1x", "10x", "10x_search1x")},
        "timing_s": {
            "grid_train": val.train_s,
            "grid_validate": val.validate_s,
            "final_train": t_final_train,
            "test": t_test,
            "total": t_total,
        },
        "training_row_passes_per_s": row_passes / (val.train_s + t_final_train),
        "config": asdict(cfg),
    }


def _plan(ds: UciDataset, cfg: ProtocolConfig) -> _Plan:
    epochs = cfg.epochs if cfg.epochs is not None else ds.n_epochs
    rates = cfg.dropout_rates if cfg.dropout_rates is not None else ds.dropout_rates
    taus = cfg.tau_values if cfg.tau_values is not None else ds.tau_values
    sizes = {len(tr) for tr in ds.train_splits}
    if len(sizes) != 1:
        raise ValueError(f"{ds.name}: splits of unequal size {sorted(sizes)} cannot share a stack")
    n_train = sizes.pop()
    return _Plan(
        grid=[(r, t) for r in rates for t in taus],
        epochs=epochs,
        search_epochs=epochs * cfg.search_multiplier,
        n_train=n_train,
        n_fit=int((1 - cfg.val_fraction) * n_train),
    )


def _grid_search(ds: UciDataset, cfg: ProtocolConfig, plan: _Plan) -> _Validated:
    """Every split x grid point in one stack, trained on the first 80%, scored on the rest."""
    grid, n_grid, n_splits = plan.grid, len(plan.grid), ds.n_splits
    fits = [standardise(ds.x[tr[: plan.n_fit]], ds.y[tr[: plan.n_fit]]) for tr in ds.train_splits]
    vals = [tr[plan.n_fit :] for tr in ds.train_splits]
    keep = torch.tensor([1 - r for _ in range(n_splits) for r, _ in grid], dtype=torch.float64)
    tau = torch.tensor([t for _ in range(n_splits) for _, t in grid], dtype=torch.float64)
    gen = _generator(cfg, ds.name, "grid")
    model = StackedMLP.glorot(keep, ds.x.shape[1], ds.n_hidden, 1, gen)
    at_n_epochs: list[StackedMLP] = []  # the search's n_epochs snapshot, if it ran longer

    def grid_snapshot(epoch: int) -> None:
        if epoch == plan.epochs and plan.search_epochs > plan.epochs:
            at_n_epochs.append(model.select(list(range(model.n_models))))

    t0 = time.perf_counter()
    decay = _weight_decay(keep, tau, plan.n_fit, cfg)
    train_stacked(
        model,
        _stack(fits, n_grid),
        decay,
        plan.search_epochs,
        gen,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        on_epoch=grid_snapshot,
    )
    t_train = time.perf_counter() - t0

    def validate(m: StackedMLP) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        ll, rmse = np.zeros((n_splits, n_grid)), np.zeros((n_splits, n_grid))
        for s in range(n_splits):
            xv = fits[s].inputs(ds.x[vals[s]])
            for k, (_, tk) in enumerate(grid):
                rmse[s, k], ll[s, k] = score(
                    m, s * n_grid + k, xv, ds.y[vals[s]], fits[s], tk, cfg.val_samples, gen
                )
        return ll, rmse

    ll, rmse = validate(model)
    ll_1x, rmse_1x = validate(at_n_epochs[0]) if at_n_epochs else (ll, rmse)
    return _Validated(ll, rmse, ll_1x, rmse_1x, t_train, time.perf_counter() - t0 - t_train)


def _train_final(
    ds: UciDataset,
    cfg: ProtocolConfig,
    plan: _Plan,
    fulls: list[Standardised],
    choices: list[tuple[float, float]],
) -> tuple[StackedMLP, StackedMLP]:
    """Final models on all training rows: the 1x and 10x choices trained together for 10 x
    n_epochs. Returns the stack, and its 1x half as it was at n_epochs."""
    n_splits = ds.n_splits
    keep = torch.tensor([1 - r for r, _ in choices], dtype=torch.float64)
    tau = torch.tensor([t for _, t in choices], dtype=torch.float64)
    gen = _generator(cfg, ds.name, "final")
    final = StackedMLP.glorot(keep, ds.x.shape[1], ds.n_hidden, 1, gen)
    snapshots: list[StackedMLP] = []

    def snapshot(epoch: int) -> None:
        if epoch == plan.epochs:
            snapshots.append(final.select(list(range(n_splits))))

    data = _stack(fulls, 1)
    data = StackData(x=data.x, y=data.y, group=torch.arange(2 * n_splits) % n_splits)
    train_stacked(
        final,
        data,
        _weight_decay(keep, tau, plan.n_train, cfg),
        plan.epochs * cfg.epoch_multiplier,
        gen,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        on_epoch=snapshot,
    )
    return final, snapshots[0]


def _test(
    ds: UciDataset,
    cfg: ProtocolConfig,
    plan: _Plan,
    fulls: list[Standardised],
    choices: list[tuple[float, float]],
    models: tuple[StackedMLP, StackedMLP],
    val: _Validated,
) -> list[dict[str, Any]]:
    """Each split's test rows through the three columns' models. models: (1x at n_epochs, final)."""
    at_1x, final = models
    n_splits = ds.n_splits
    gen = _generator(cfg, ds.name, "test")
    splits: list[dict[str, Any]] = []
    for s, te in enumerate(ds.test_splits):
        xt, yt = fulls[s].inputs(ds.x[te]), ds.y[te]
        (rate_1x, tau_1x), (rate, tau_s) = choices[s], choices[n_splits + s]
        r1, l1 = score(at_1x, s, xt, yt, fulls[s], tau_1x, cfg.test_samples, gen)
        r10, l10 = score(final, n_splits + s, xt, yt, fulls[s], tau_s, cfg.test_samples, gen)
        r10s1, l10s1 = score(final, s, xt, yt, fulls[s], tau_1x, cfg.test_samples, gen)
        splits.append(
            {
                "split": s,
                "dropout_rate": rate,
                "tau": tau_s,
                "dropout_rate_1x": rate_1x,
                "tau_1x": tau_1x,
                "val_ll": val.ll[s].tolist(),
                "val_rmse": val.rmse[s].tolist(),
                "val_ll_1x": val.ll_1x[s].tolist(),
                "val_rmse_1x": val.rmse_1x[s].tolist(),
                "rmse_1x": r1,
                "ll_1x": l1,
                "rmse_10x": r10,
                "ll_10x": l10,
                "rmse_10x_search1x": r10s1,
                "ll_10x_search1x": l10s1,
                "n_train": plan.n_train,
                "n_test": len(te),
            }
        )
    return splits

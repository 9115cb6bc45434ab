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

from service.maths import uncertainty
from service.training.stacked import StackData, StackedMLP, mc_samples, train_stacked
from service.training.uci.data import UciDataset


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


@dataclass(frozen=True)
class Standardised:
    x: NDArray[np.float32]
    y: NDArray[np.float32]
    x_mean: NDArray[np.float64]
    x_std: NDArray[np.float64]
    y_mean: float
    y_std: float

    def inputs(self, x: NDArray[np.float64]) -> torch.Tensor:
        return torch.from_numpy(((x - self.x_mean) / self.x_std).astype(np.float32))


def standardise(x: NDArray[np.float64], y: NDArray[np.float64]) -> Standardised:
    """Training statistics; a constant column keeps std 1 (Gal: std_X_train[std == 0] = 1)."""
    x_mean, x_std = x.mean(0), x.std(0)
    x_std = np.where(x_std == 0, 1.0, x_std)
    y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
    return Standardised(
        x=((x - x_mean) / x_std).astype(np.float32),
        y=((y - y_mean) / y_std).astype(np.float32),
        x_mean=x_mean,
        x_std=x_std,
        y_mean=y_mean,
        y_std=y_std,
    )


def _generator(cfg: ProtocolConfig, name: str, phase: str) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(f"{cfg.seed}/{name}/{phase}".encode()))


def score(
    m: StackedMLP,
    model: int,
    x: torch.Tensor,
    y: NDArray[np.float64],
    norm: Standardised,
    tau: float,
    samples: int,
    gen: torch.Generator,
) -> tuple[float, float]:
    """(RMSE of the MC mean, test log-likelihood), both in the target's original units."""
    acc = uncertainty.StreamingRegressionScore(y, tau)
    for chunk in mc_samples(m, model, x, samples, gen):
        acc.update(chunk.double().numpy() * norm.y_std + norm.y_mean)
    return acc.rmse(), acc.log_likelihood()


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


def run_dataset(ds: UciDataset, cfg: ProtocolConfig) -> dict[str, Any]:
    """Three columns from one search and one final stack (see the module docstring):

    1x: search and final at n_epochs (the paper's Table 1);
    10x: search and final at search_multiplier x and 10 x n_epochs (Gal's 10x runs);
    10x_search1x: the 1x choice trained for 10 x n_epochs (10x read literally: same choice, longer).
    The grid stack's state after n_epochs is exactly a separate n_epochs search (same seed,
    nothing depends on the epoch count), so the 1x choice costs one extra validation.
    """
    t_start = time.perf_counter()
    epochs = cfg.epochs if cfg.epochs is not None else ds.n_epochs
    rates = cfg.dropout_rates if cfg.dropout_rates is not None else ds.dropout_rates
    taus = cfg.tau_values if cfg.tau_values is not None else ds.tau_values
    grid = [(r, t) for r in rates for t in taus]
    n_grid, n_splits = len(grid), ds.n_splits
    sizes = {len(tr) for tr in ds.train_splits}
    if len(sizes) != 1:
        raise ValueError(f"{ds.name}: splits of unequal size {sorted(sizes)} cannot share a stack")

    # ---- grid search: every split x grid point in one stack, trained on the first 80%.
    n_train = sizes.pop()
    n_fit = int((1 - cfg.val_fraction) * n_train)
    fits, vals = [], []
    for tr in ds.train_splits:
        fit, val = tr[:n_fit], tr[n_fit:]
        fits.append(standardise(ds.x[fit], ds.y[fit]))
        vals.append(val)
    keep = torch.tensor([1 - r for _ in range(n_splits) for r, _ in grid], dtype=torch.float64)
    tau = torch.tensor([t for _ in range(n_splits) for _, t in grid], dtype=torch.float64)
    gen = _generator(cfg, ds.name, "grid")
    d = ds.x.shape[1]
    model = StackedMLP.glorot(keep, d, ds.n_hidden, 1, gen)
    search_epochs = epochs * cfg.search_multiplier
    grid_at_n_epochs: list[StackedMLP] = []  # the search's n_epochs snapshot, if it ran longer

    def grid_snapshot(epoch: int) -> None:
        if epoch == epochs and search_epochs > epochs:
            grid_at_n_epochs.append(model.select(list(range(model.n_models))))

    t0 = time.perf_counter()
    train_stacked(
        model,
        _stack(fits, n_grid),
        _weight_decay(keep, tau, n_fit, cfg),
        search_epochs,
        gen,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        on_epoch=grid_snapshot,
    )
    t_grid_train = time.perf_counter() - t0

    def validate(m: StackedMLP) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        ll, rmse = np.zeros((n_splits, n_grid)), np.zeros((n_splits, n_grid))
        for s in range(n_splits):
            xv = fits[s].inputs(ds.x[vals[s]])
            for k, (_, tk) in enumerate(grid):
                rmse[s, k], ll[s, k] = score(
                    m, s * n_grid + k, xv, ds.y[vals[s]], fits[s], tk, cfg.val_samples, gen
                )
        return ll, rmse

    val_ll, val_rmse = validate(model)
    val_ll_1x, val_rmse_1x = (
        validate(grid_at_n_epochs[0]) if grid_at_n_epochs else (val_ll, val_rmse)
    )
    t_grid = time.perf_counter() - t0
    best = val_ll.argmax(axis=1)
    best_1x = val_ll_1x.argmax(axis=1)

    # ---- final models on all training rows: the 1x choices (models 0..S-1) and the 10x
    # choices (S..2S-1), trained together for 10 x n_epochs; the 1x half is also kept at n_epochs.
    fulls = [standardise(ds.x[tr], ds.y[tr]) for tr in ds.train_splits]
    choices = [grid[b] for b in best_1x] + [grid[b] for b in best]
    keep_f = torch.tensor([1 - r for r, _ in choices], dtype=torch.float64)
    tau_f = torch.tensor([t for _, t in choices], dtype=torch.float64)
    gen = _generator(cfg, ds.name, "final")
    final = StackedMLP.glorot(keep_f, d, ds.n_hidden, 1, gen)
    snapshots: dict[int, StackedMLP] = {}

    def snapshot(epoch: int) -> None:
        if epoch == epochs:
            snapshots[epoch] = final.select(list(range(n_splits)))

    t0 = time.perf_counter()
    data = _stack(fulls, 1)
    data = StackData(x=data.x, y=data.y, group=torch.arange(2 * n_splits) % n_splits)
    train_stacked(
        final,
        data,
        _weight_decay(keep_f, tau_f, n_train, cfg),
        epochs * cfg.epoch_multiplier,
        gen,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        on_epoch=snapshot,
    )
    t_final_train = time.perf_counter() - t0
    gen = _generator(cfg, ds.name, "test")
    t0 = time.perf_counter()
    splits: list[dict[str, Any]] = []
    for s, te in enumerate(ds.test_splits):
        xt, yt = fulls[s].inputs(ds.x[te]), ds.y[te]
        (rate_1x, tau_1x), (rate, tau_s) = choices[s], choices[n_splits + s]
        r1, l1 = score(snapshots[epochs], s, xt, yt, fulls[s], tau_1x, cfg.test_samples, gen)
        r10, l10 = score(final, n_splits + s, xt, yt, fulls[s], tau_s, cfg.test_samples, gen)
        r10s1, l10s1 = score(final, s, xt, yt, fulls[s], tau_1x, cfg.test_samples, gen)
        splits.append(
            {
                "split": s,
                "dropout_rate": rate,
                "tau": tau_s,
                "dropout_rate_1x": rate_1x,
                "tau_1x": tau_1x,
                "val_ll": val_ll[s].tolist(),
                "val_rmse": val_rmse[s].tolist(),
                "val_ll_1x": val_ll_1x[s].tolist(),
                "val_rmse_1x": val_rmse_1x[s].tolist(),
                "rmse_1x": r1,
                "ll_1x": l1,
                "rmse_10x": r10,
                "ll_10x": l10,
                "rmse_10x_search1x": r10s1,
                "ll_10x_search1x": l10s1,
                "n_train": n_train,
                "n_test": len(te),
            }
        )
    t_test = time.perf_counter() - t0
    t_total = time.perf_counter() - t_start
    row_passes = n_splits * (
        n_grid * n_fit * search_epochs + 2 * n_train * epochs * cfg.epoch_multiplier
    )
    return {
        "dataset": ds.name,
        "n_splits": n_splits,
        "n_hidden": ds.n_hidden,
        "n_epochs": epochs,
        "search_epochs": search_epochs,
        "epochs_10x": epochs * cfg.epoch_multiplier,
        "grid": [{"dropout_rate": r, "tau": t} for r, t in grid],
        "splits": splits,
        "summary": {key: summarise(splits, key) for key in ("1x", "10x", "10x_search1x")},
        "timing_s": {
            "grid_train": t_grid_train,
            "grid_validate": t_grid - t_grid_train,
            "final_train": t_final_train,
            "test": t_test,
            "total": t_total,
        },
        "training_row_passes_per_s": row_passes / (t_grid_train + t_final_train),
        "config": asdict(cfg),
    }


def summarise(splits: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Mean and standard error over splits; SE = std (ddof 0) / sqrt(n), as in Gal's logs."""
    out: dict[str, float] = {}
    for metric in ("rmse", "ll"):
        v = np.array([s[f"{metric}_{key}"] for s in splits], dtype=np.float64)
        out[f"{metric}_mean"] = float(v.mean())
        out[f"{metric}_se"] = float(v.std() / np.sqrt(len(v)))
    return out

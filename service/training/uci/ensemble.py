"""The deep-ensemble baseline (Lakshminarayanan et al. 2017, without adversarial training).

Per split: M networks of the tuned model's size, each with its own initial weights and minibatch
order, no dropout in training or at test time. The ensemble predicts a Gaussian with the
members' mean and variance 1/tau + their spread (the mixture's moments, as that paper scores its
ensembles); tau is fitted on the validation rows like the MC dropout model's, and the epoch count
is chosen by the same early stopping. Weight decay comes from the tuned tau with keep = 1.
The chosen epochs are then refitted on all training rows, or, where the MC dropout model is not
refitted either, the members are kept as they were at the chosen checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from service.training.stacked import StackData, StackedMLP, train_stacked
from service.training.tuning.search import fit_tau, gaussian_log_likelihood_of_tau
from service.training.tuning.stack_models import concat, refit
from service.training.tuning.stacked_search import Problem, SearchConfig, generator, weight_decay
from service.training.uci.data import UciDataset
from service.training.uci.scoring import Standardised


@dataclass(frozen=True)
class EnsembleConfig:
    members: int = 5


@dataclass
class _Best:
    epoch: int = 0
    tau_std: float = 1.0  # standardised units
    ll: float = -math.inf


def _means(m: StackedMLP, first: int, count: int, x: torch.Tensor) -> NDArray[np.float64]:
    """(count, N) outputs of members first..first+count-1, no dropout."""
    idx = list(range(first, first + count))
    sub = m.select(idx)
    with torch.no_grad():
        out = sub.forward(x.expand(count, *x.shape), None, None)
    return out[:, :, 0].double().numpy()


@dataclass
class EnsembleResult:
    model: StackedMLP  # split s's member k at s * members + k
    members: int
    norms: list[Standardised]
    best: list[_Best]

    def test(self, s: int, x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[float, float]:
        """(RMSE, Gaussian log-likelihood) of split s's ensemble, in the target's units."""
        norm = self.norms[s]
        mu = _means(self.model, s * self.members, self.members, norm.inputs(x))
        mu = mu * norm.y_std + norm.y_mean
        mean, spread = mu.mean(0), mu.var(0)
        tau = self.best[s].tau_std / norm.y_std**2
        rmse = float(np.sqrt(np.mean((mean - y) ** 2)))
        return rmse, gaussian_log_likelihood_of_tau(mean, spread, y)(tau)

    def chosen(self, s: int) -> dict[str, Any]:
        b = self.best[s]
        return {"ensemble_epochs": b.epoch, "ensemble_tau": b.tau_std / self.norms[s].y_std ** 2}


def _fit_rows(problems: list[Problem], members: int) -> StackData:
    """Every split's fit rows, shared by that split's members."""
    return StackData(
        x=torch.from_numpy(np.stack([p.fit_x for p in problems])),
        y=torch.from_numpy(np.stack([p.fit_y for p in problems])[:, :, None]),
        group=torch.arange(len(problems)).repeat_interleave(members),
    )


def run_ensemble(
    ds: UciDataset,
    problems: list[Problem],
    norms: list[Standardised],
    taus: list[float],
    scfg: SearchConfig,
    cfg: EnsembleConfig,
    refitted: bool = True,
) -> EnsembleResult:
    """`norms`: each split's scaling of the rows the final members train on (all training
    rows when refitted, else the search's fit rows)."""
    s_count, k = len(problems), cfg.members
    n_fit = len(problems[0].fit_y)
    keep = torch.ones(s_count * k, dtype=torch.float64)
    tau_wd = torch.tensor([t for t in taus for _ in range(k)], dtype=torch.float64)
    gen = generator(scfg.seed, ds.name, "ensemble")
    model = StackedMLP.glorot(keep, ds.x.shape[1], scfg.hidden, 1, gen)
    data = _fit_rows(problems, k)
    best = [_Best() for _ in problems]
    kept: list[StackedMLP | None] = [None] * s_count  # each split's members at its best epoch
    stops = set(scfg.checkpoint_epochs())

    def checkpoint(epoch: int) -> None:
        if epoch not in stops:
            return
        for s, p in enumerate(problems):
            mu = _means(model, s * k, k, torch.from_numpy(p.val_x))
            scale = p.y_std**2
            ll = gaussian_log_likelihood_of_tau(mu.mean(0), mu.var(0), p.val_y)
            fit = fit_tau(ll, p.tau_range[0] * scale, p.tau_range[1] * scale)
            if fit.log_likelihood > best[s].ll:
                best[s] = _Best(epoch, fit.tau, fit.log_likelihood)
                if not refitted:
                    kept[s] = model.select(list(range(s * k, (s + 1) * k)))

    train_stacked(
        model,
        data,
        weight_decay(keep, tau_wd, n_fit, scfg.length_scale),
        scfg.epochs,
        gen,
        batch_size=scfg.batch_size,
        lr=scfg.lr,
        on_epoch=checkpoint,
    )
    if not refitted:
        assert all(m is not None for m in kept)
        return EnsembleResult(concat([m for m in kept if m is not None]), k, norms, best)
    final = refit(
        [f.x for f in norms for _ in range(k)],
        [f.y for f in norms for _ in range(k)],
        [1.0] * (s_count * k),
        tau_wd.tolist(),
        [b.epoch for b in best for _ in range(k)],
        scfg,
        phase=f"{ds.name}/ensemble",
    )
    return EnsembleResult(final, k, norms, best)

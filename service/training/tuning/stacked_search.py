"""The dropout-rate search, with every round's candidates trained side by side as one stack.

Several independent searches (one per UCI split, or the one of `mcdrop tune`) share each round's
stack. At every checkpoint epoch each candidate is scored on its own validation rows: T MC
passes, tau fitted continuously (see search.fit_tau), and the checkpoint with the best
validation log-likelihood is kept, so the epoch count is chosen by early stopping within the cap.
Weight decay follows lambda = keep l^2 / (2 N tau) with tau in the target's units (as Gal's
code); round 0 uses the problem's starting tau, later rounds the best tau found so far.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from service.training.stacked import StackData, StackedMLP, mc_samples, train_stacked
from service.training.tuning.search import (
    Axis,
    Choice,
    choose,
    fit_tau,
    mc_log_likelihood_of_tau,
    next_points,
)


@dataclass(frozen=True)
class Problem:
    """One search: standardised fit and validation rows, and the target's scale."""

    fit_x: NDArray[np.float32]  # (N, D)
    fit_y: NDArray[np.float32]  # (N,)
    val_x: NDArray[np.float32]  # (V, D)
    val_y: NDArray[np.float64]  # (V,), standardised like fit_y
    y_std: float  # target units per standardised unit
    tau_range: tuple[float, float]  # first tau bracket, target units
    tau_start: float  # tau behind round 0's weight decay, target units


@dataclass(frozen=True)
class SearchConfig:
    dropout_start: tuple[float, ...] = (0.005, 0.02, 0.08, 0.3)
    dropout_axis: Axis = field(default_factory=lambda: Axis(1e-3, 0.5))
    budget: int = 8  # networks trained per problem, the first round included
    per_round: int = 2
    epochs: int = 100  # the cap when early stopping
    early_stopping: bool = True
    checkpoints: int = 8  # validation points spread over the epochs
    val_samples: int = 200
    hidden: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    length_scale: float = 1e-2
    seed: int = 0

    def checkpoint_epochs(self) -> list[int]:
        if not self.early_stopping:
            return [self.epochs]
        k = max(1, min(self.checkpoints, self.epochs))
        return sorted({max(1, round(self.epochs * (i + 1) / k)) for i in range(k)})


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    tau: float  # target units
    log_likelihood: float  # validation, target units
    rmse: float  # validation, target units
    tau_brackets: list[tuple[float, float]]
    tau_edge: Literal["low", "high"] | None


@dataclass
class Candidate:
    dropout: float
    round: int
    tau_weight_decay: float
    checkpoints: list[Checkpoint] = field(default_factory=list)
    best: Checkpoint | None = None
    model: StackedMLP | None = None  # one model, as it was at the best checkpoint

    def record(self) -> dict[str, Any]:
        assert self.best is not None
        return {
            "dropout": self.dropout,
            "round": self.round,
            "tau_weight_decay": self.tau_weight_decay,
            "epoch": self.best.epoch,
            "tau": self.best.tau,
            "val_log_likelihood": self.best.log_likelihood,
            "val_rmse": self.best.rmse,
            "tau_brackets": [list(b) for b in self.best.tau_brackets],
            "tau_edge": self.best.tau_edge,
            "checkpoints": [
                {
                    "epoch": c.epoch,
                    "tau": c.tau,
                    "val_log_likelihood": c.log_likelihood,
                    "val_rmse": c.rmse,
                }
                for c in self.checkpoints
            ],
        }


@dataclass
class SearchOutcome:
    candidates: list[Candidate]
    chosen: Candidate
    dropout: Choice
    epoch_edge: Literal["cap"] | None  # the best checkpoint was the last allowed epoch

    def trace(self) -> dict[str, Any]:
        best = self.chosen.best
        assert best is not None
        return {
            "chosen": {
                "dropout": self.chosen.dropout,
                "dropout_edge": self.dropout.edge,
                "dropout_edge_why": self.dropout.why,
                "tau": best.tau,
                "tau_edge": best.tau_edge,
                "epochs": best.epoch,
                "epochs_edge": self.epoch_edge,
                "tau_weight_decay": self.chosen.tau_weight_decay,
                "val_log_likelihood": best.log_likelihood,
                "val_rmse": best.rmse,
            },
            "points": [c.record() for c in self.candidates],
        }


def generator(seed: int, *parts: object) -> torch.Generator:
    key = "/".join(str(p) for p in (seed, *parts))
    return torch.Generator().manual_seed(zlib.crc32(key.encode()))


def weight_decay(
    keep: torch.Tensor, tau: torch.Tensor, n: int, length_scale: float
) -> torch.Tensor:
    """lambda = keep l^2 / (2 N tau), per model
    (service.maths.uncertainty.weight_decay_from_tau)."""
    return keep * length_scale**2 / (2.0 * n * tau)


def score(
    m: StackedMLP, g: int, prob: Problem, samples: int, gen: torch.Generator, epoch: int
) -> Checkpoint:
    """Model g on its problem's validation rows: tau fitted, LL and RMSE in target units."""
    x = torch.from_numpy(prob.val_x)
    ys = torch.cat(list(mc_samples(m, g, x, samples, gen)))[:, :, 0].double().numpy()
    lo, hi = prob.tau_range
    scale = prob.y_std**2  # tau in standardised units = tau in target units x y_std^2
    fit = fit_tau(mc_log_likelihood_of_tau(ys, prob.val_y), lo * scale, hi * scale)
    rmse = float(np.sqrt(np.mean((ys.mean(0) - prob.val_y) ** 2))) * prob.y_std
    return Checkpoint(
        epoch=epoch,
        tau=fit.tau / scale,
        log_likelihood=fit.log_likelihood - math.log(prob.y_std),
        rmse=rmse,
        tau_brackets=[(a / scale, b / scale) for a, b in fit.brackets],
        tau_edge=fit.edge,
    )


def _initial(cfg: SearchConfig) -> list[float]:
    start = sorted(cfg.dropout_start)
    if cfg.budget >= len(start):
        return start
    picks = np.linspace(0, len(start) - 1, max(cfg.budget, 1)).round().astype(int)
    return [start[i] for i in sorted(set(picks.tolist()))]


def search(problems: list[Problem], cfg: SearchConfig) -> list[SearchOutcome]:
    """Rounds of stacked training until every problem's grid is settled or its budget spent."""
    sizes = {len(p.fit_y) for p in problems}
    if len(sizes) != 1:
        raise ValueError(f"problems of unequal size {sorted(sizes)} cannot share a stack")
    n_fit = sizes.pop()
    d = problems[0].fit_x.shape[1]
    data_x = torch.from_numpy(np.stack([p.fit_x for p in problems]))
    data_y = torch.from_numpy(np.stack([p.fit_y for p in problems])[:, :, None])
    found: list[list[Candidate]] = [[] for _ in problems]
    pending = [list(_initial(cfg)) for _ in problems]
    score_gen = generator(cfg.seed, "validate")
    stops = set(cfg.checkpoint_epochs())
    rnd = 0
    while any(pending):
        owners = [s for s, pts in enumerate(pending) for _ in pts]
        cands: list[Candidate] = []
        for s, pts in enumerate(pending):
            tau_wd = _best_tau(found[s]) or problems[s].tau_start
            cands += [Candidate(dropout=p, round=rnd, tau_weight_decay=tau_wd) for p in pts]
        keep = torch.tensor([1 - c.dropout for c in cands], dtype=torch.float64)
        tau = torch.tensor([c.tau_weight_decay for c in cands], dtype=torch.float64)
        gen = generator(cfg.seed, "round", rnd)
        model = StackedMLP.glorot(keep, d, cfg.hidden, 1, gen)
        data = StackData(x=data_x, y=data_y, group=torch.tensor(owners))

        def checkpoint(
            epoch: int,
            model: StackedMLP = model,
            cands: list[Candidate] = cands,
            owners: list[int] = owners,
        ) -> None:
            if epoch not in stops:
                return
            for g, (c, s) in enumerate(zip(cands, owners, strict=True)):
                cp = score(model, g, problems[s], cfg.val_samples, score_gen, epoch)
                c.checkpoints.append(cp)
                if c.best is None or cp.log_likelihood > c.best.log_likelihood:
                    c.best, c.model = cp, model.select([g])

        train_stacked(
            model,
            data,
            weight_decay(keep, tau, n_fit, cfg.length_scale),
            cfg.epochs,
            gen,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            on_epoch=checkpoint,
        )
        for c, s in zip(cands, owners, strict=True):
            found[s].append(c)
        rnd += 1
        pending = []
        for s in range(len(problems)):
            scores = {c.dropout: _ll(c) for c in found[s]}
            left = cfg.budget - len(found[s])
            pending.append(next_points(scores, cfg.dropout_axis, min(cfg.per_round, left)))
    return [_outcome(cs, cfg) for cs in found]


def _ll(c: Candidate) -> float:
    assert c.best is not None
    return c.best.log_likelihood


def _best_tau(cands: list[Candidate]) -> float | None:
    if not cands:
        return None
    best = max(cands, key=_ll).best
    assert best is not None
    return best.tau


def _outcome(cands: list[Candidate], cfg: SearchConfig) -> SearchOutcome:
    choice = choose({c.dropout: _ll(c) for c in cands}, cfg.dropout_axis)
    chosen = next(c for c in cands if c.dropout == choice.value)
    assert chosen.best is not None
    at_cap = cfg.early_stopping and chosen.best.epoch == cfg.epochs
    return SearchOutcome(cands, chosen, choice, "cap" if at_cap else None)

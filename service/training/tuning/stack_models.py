"""From a search's stack to the models it chose: a refit on every row, and the nn.Sequential
that `mcdrop serve` loads."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from service.artifacts.manifest import DropoutSpec, MLPArchitecture
from service.engines.nets import build_mlp
from service.training.stacked import StackData, StackedMLP, train_stacked
from service.training.tuning.stacked_search import SearchConfig, generator, weight_decay


def refit(
    xs: list[NDArray[np.float32]],
    ys: list[NDArray[np.float32]],
    keep: list[float],
    tau_weight_decay: list[float],
    epochs: list[int],
    cfg: SearchConfig,
    phase: str = "refit",
) -> StackedMLP:
    """One model per (rows, choice), trained side by side, each kept at its own epoch count."""
    n = {len(y) for y in ys}
    if len(n) != 1:
        raise ValueError(f"refits of unequal size {sorted(n)} cannot share a stack")
    n_rows = n.pop()
    keep_t = torch.tensor(keep, dtype=torch.float64)
    gen = generator(cfg.seed, phase)
    model = StackedMLP.glorot(keep_t, xs[0].shape[1], cfg.hidden, 1, gen)
    data = StackData(
        x=torch.from_numpy(np.stack(xs)),
        y=torch.from_numpy(np.stack(ys)[:, :, None]),
        group=torch.arange(len(xs)),
    )
    done: dict[int, StackedMLP] = {}

    def snapshot(epoch: int) -> None:
        for g, e in enumerate(epochs):
            if e == epoch:
                done[g] = model.select([g])

    tau = torch.tensor(tau_weight_decay, dtype=torch.float64)
    train_stacked(
        model,
        data,
        weight_decay(keep_t, tau, n_rows, cfg.length_scale),
        max(epochs),
        gen,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        on_epoch=snapshot,
    )
    return concat([done[g] for g in range(len(xs))])


def concat(models: list[StackedMLP]) -> StackedMLP:
    return StackedMLP(
        w1=torch.cat([m.w1 for m in models]),
        b1=torch.cat([m.b1 for m in models]),
        w2=torch.cat([m.w2 for m in models]),
        b2=torch.cat([m.b2 for m in models]),
        keep_prob=torch.cat([m.keep_prob for m in models]),
    )


def to_sequential(m: StackedMLP, g: int = 0) -> nn.Sequential:
    """Model g of a stack as the nn.Sequential that `mcdrop serve` loads (same maths)."""
    d, h = int(m.w1.shape[1]), int(m.w1.shape[2])
    rate = 1.0 - float(m.keep_prob[g])
    net = build_mlp(mlp_architecture(d, h), dropout_spec(rate))
    linears = [layer for layer in net if isinstance(layer, nn.Linear)]
    with torch.no_grad():
        linears[0].weight.copy_(m.w1[g].T)
        linears[0].bias.copy_(m.b1[g, 0])
        linears[1].weight.copy_(m.w2[g].T)
        linears[1].bias.copy_(m.b2[g, 0])
    return net


def mlp_architecture(d: int, h: int) -> MLPArchitecture:
    """One hidden layer of h units on d inputs, one output: the shape the search trains."""
    return MLPArchitecture(input_dim=d, hidden=[h], output_dim=1, activation="relu")


def dropout_spec(rate: float) -> DropoutSpec:
    return DropoutSpec(noise="bernoulli", input_rate=rate, hidden_rate=rate)

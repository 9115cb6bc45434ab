"""Many small dropout MLPs trained at once, as one stack of weights.

The UCI protocol trains hundreds of tiny networks (every split times every grid point). One at a
time, Python and kernel-launch overheads dominate; stacked, each step is a handful of batched
matmuls (torch.baddbmm over a leading model axis) and elementwise passes over (G, B, H) tensors.

The models stay independent: each has its own rows, minibatch order, dropout masks, keep
probability and weight decay. Gradients are written by hand (one hidden layer makes them short)
rather than by autograd, which saves several passes over (G, B, H) per step; tests check them
against autograd. Adam is elementwise, so one Adam over the stacked tensors is G separate Adams.

Network (Gal's UCI code): dropout on the input -> Linear -> ReLU -> dropout -> Linear, inverted
dropout (kept units scaled by 1/keep), loss = mean squared error + lambda * sum of squared weight
matrices (biases not decayed), Glorot-uniform weights and zero biases as in Keras.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Masks come from 16-bit lanes of 64-bit random words compared with an integer threshold,
# cheaper than torch.rand < keep (docs/performance.md). P(keep) is off by at most 2^-17.
# The lane width is the serving engine's, so both draw keep decisions at one resolution.
from service.engines.masks import LANE_RANGE


class LaneSource:
    """Random 16-bit lanes from numpy's SFC64, seeded once from a torch generator.

    SFC64 words are cheaper than torch.randint's 64-bit words, and mask drawing is a large part
    of a small network's step (docs/performance.md). Seeding
    from `gen` keeps a run reproducible from its seed.
    """

    def __init__(self, gen: torch.Generator) -> None:
        seed = int(torch.randint(0, 2**62, (1,), dtype=torch.int64, generator=gen))
        self._bits = np.random.SFC64(seed)

    def lanes(self, shape: tuple[int, ...]) -> Tensor:
        n = math.prod(shape)
        words = self._bits.random_raw((n + 3) // 4)
        return torch.from_numpy(words.view(np.int16)[:n].reshape(shape))


def keep_thresholds(keep_prob: Tensor) -> Tensor:
    """(G,) keep probabilities -> (G, 1, 1) int16 thresholds for signed 16-bit lanes."""
    if bool(((keep_prob <= 0) | (keep_prob > 1)).any()):
        raise ValueError(f"keep probabilities must lie in (0, 1], got {keep_prob.tolist()}")
    thr = torch.round(keep_prob.double() * LANE_RANGE) - LANE_RANGE // 2
    # keep = 1 would need 32768, one past int16's range; clamped, it drops with P = 2^-16.
    # Stacks where every model keeps everything skip masks altogether (see train_stacked).
    return thr.clamp(max=LANE_RANGE // 2 - 1).to(torch.int16).view(-1, 1, 1)


def keep_masks(shape: tuple[int, ...], thresholds: Tensor, source: LaneSource) -> Tensor:
    """Bool mask of `shape` (leading axis = model), True where the unit is kept."""
    return source.lanes(shape) < thresholds


@dataclass
class StackedMLP:
    """G one-hidden-layer ReLU networks: w1 (G, D, H), b1 (G, 1, H), w2 (G, H, O), b2 (G, 1, O)."""

    w1: Tensor
    b1: Tensor
    w2: Tensor
    b2: Tensor
    keep_prob: Tensor  # (G,) keep probability of every dropout site of model g

    @classmethod
    def glorot(
        cls, keep_prob: Tensor, n_in: int, n_hidden: int, n_out: int, gen: torch.Generator
    ) -> StackedMLP:
        """Keras' defaults: Glorot-uniform weight matrices, zero biases."""
        g = int(keep_prob.numel())

        def uniform(fan_in: int, fan_out: int) -> Tensor:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            return (torch.rand(g, fan_in, fan_out, generator=gen) * 2 - 1) * limit

        return cls(
            w1=uniform(n_in, n_hidden),
            b1=torch.zeros(g, 1, n_hidden),
            w2=uniform(n_hidden, n_out),
            b2=torch.zeros(g, 1, n_out),
            keep_prob=keep_prob.float().clone(),
        )

    @property
    def n_models(self) -> int:
        return int(self.w1.shape[0])

    def params(self) -> list[Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def select(self, models: Tensor | list[int]) -> StackedMLP:
        """A copy holding only the given models (e.g. a snapshot before training goes on)."""
        idx = torch.as_tensor(models, dtype=torch.long)
        w1, b1, w2, b2 = (p.detach()[idx].clone() for p in self.params())
        return StackedMLP(w1, b1, w2, b2, keep_prob=self.keep_prob[idx].clone())

    def forward(self, x: Tensor, keep_in: Tensor | None, keep_hidden: Tensor | None) -> Tensor:
        """x (G, B, D) -> (G, B, O); masks are bool (G, B, D) and (G, B, H), None = no dropout."""
        return _forward(self, x, keep_in, keep_hidden)[2]


def _forward(
    m: StackedMLP, x: Tensor, keep_in: Tensor | None, keep_hidden: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(masked input, hidden activation after ReLU and mask, output).

    Multiplying by a bool mask is cheaper than torch.where, and the backward pass
    recovers the ReLU-and-dropout gate as a > 0 (h == 0 exactly has probability zero).
    """
    inv = (1.0 / m.keep_prob).view(-1, 1, 1)
    xm = x if keep_in is None else x * keep_in
    a = torch.baddbmm(m.b1, xm, m.w1 * inv).clamp_(min=0.0)
    if keep_hidden is not None:
        a.mul_(keep_hidden)
    out = torch.baddbmm(m.b2, a, m.w2 * inv)
    return xm, a, out


def loss_and_grads(
    m: StackedMLP,
    x: Tensor,
    y: Tensor,
    keep_in: Tensor | None,
    keep_hidden: Tensor | None,
    weight_decay: Tensor,
) -> Tensor:
    """Per-model loss (G,) = MSE + lambda_g (|W1|^2 + |W2|^2); writes each parameter's .grad.

    Derivation (per model; inv = 1/keep, a = gated hidden, out = a W2 inv + b2):
      dL/dout = 2 (out - y) / (B O);  dW2 = inv a^T dout + 2 lambda W2;  db2 = sum_b dout;
      dh = (dout W2^T inv) * gate;    dW1 = inv xm^T dh + 2 lambda W1;   db1 = sum_b dh.
    """
    inv = (1.0 / m.keep_prob).view(-1, 1, 1)
    lam = weight_decay.view(-1, 1, 1).to(m.w1.dtype)
    xm, a, out = _forward(m, x, keep_in, keep_hidden)
    resid = out - y
    n_out = resid.shape[1] * resid.shape[2]
    decay = (m.w1.square().sum((1, 2)) + m.w2.square().sum((1, 2))) * lam.view(-1)
    loss = resid.square().sum((1, 2)) / n_out + decay
    dout = resid.mul_(2.0 / n_out)
    w2s = m.w2 * inv
    m.w2.grad = torch.bmm(a.transpose(1, 2), dout).mul_(inv).addcmul_(lam, m.w2, value=2.0)
    m.b2.grad = dout.sum(1, keepdim=True)
    dh = torch.ops.aten.threshold_backward(torch.bmm(dout, w2s.transpose(1, 2)), a, 0.0)
    m.w1.grad = torch.bmm(xm.transpose(1, 2), dh).mul_(inv).addcmul_(lam, m.w1, value=2.0)
    m.b1.grad = dh.sum(1, keepdim=True)
    return loss


@dataclass(frozen=True)
class StackData:
    """Training rows shared by groups of models: x (S, N, D), y (S, N, O); model g uses group[g]."""

    x: Tensor
    y: Tensor
    group: Tensor  # (G,) long


def train_stacked(
    m: StackedMLP,
    data: StackData,
    weight_decay: Tensor,
    epochs: int,
    gen: torch.Generator,
    batch_size: int = 128,
    lr: float = 1e-3,
    on_epoch: Callable[[int], None] | None = None,
) -> None:
    """Adam for `epochs` epochs, each model with its own shuffled minibatches (Keras' fit).

    on_epoch(e) runs after epoch e (1-based), e.g. to snapshot models at n_epochs.
    """
    s, n, d = data.x.shape
    g = m.n_models
    if data.group.shape != (g,):
        raise ValueError(
            f"group must have one entry per model ({g}), got {tuple(data.group.shape)}"
        )
    x_flat = data.x.reshape(s * n, d)
    y_flat = data.y.reshape(s * n, -1)
    offset = (data.group.long() * n).view(g, 1)
    thresholds = keep_thresholds(m.keep_prob)
    dropout = bool((m.keep_prob < 1).any())
    lanes = LaneSource(gen)
    # fused: one kernel per step instead of a dozen foreach passes; at small stacks (final
    # models, one per split) the optimizer is a large share of each step.
    opt = torch.optim.Adam(m.params(), lr=lr, fused=True)
    for epoch in range(1, epochs + 1):
        order = torch.argsort(torch.rand(g, n, generator=gen), dim=1).add_(offset)
        for start in range(0, n, batch_size):
            idx = order[:, start : start + batch_size]
            xb, yb = x_flat[idx], y_flat[idx]
            b = idx.shape[1]
            k_in = keep_masks((g, b, d), thresholds, lanes) if dropout else None
            k_hid = keep_masks((g, b, m.w1.shape[2]), thresholds, lanes) if dropout else None
            loss_and_grads(m, xb, yb, k_in, k_hid, weight_decay)
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch)


def mc_samples(
    m: StackedMLP,
    model: int,
    x: Tensor,
    samples: int,
    gen: torch.Generator,
    chunk_elems: int = 1 << 20,
) -> Iterator[Tensor]:
    """T stochastic passes of one model over rows x (N, D), fresh masks per sample and row.

    Yields (t, N, O) chunks, t chosen so a chunk's hidden layer holds about chunk_elems floats.
    """
    n, d = x.shape
    h = int(m.w1.shape[2])
    one = m.select([model])
    thr = keep_thresholds(one.keep_prob).view(())
    dropout = bool(one.keep_prob[0] < 1)
    lanes = LaneSource(gen)
    # One model: plain 2-D matmuls (addmm) rather than baddbmm over a stack of one.
    inv = float(1.0 / one.keep_prob[0])
    w1, b1 = one.w1[0] * inv, one.b1[0]
    w2, b2 = one.w2[0] * inv, one.b2[0]
    per_chunk = max(1, min(samples, chunk_elems // max(1, n * h)))
    done = 0
    with torch.no_grad():
        while done < samples:
            t = min(per_chunk, samples - done)
            xt = x.expand(t, n, d).reshape(t * n, d)
            if dropout:
                xt = xt * (lanes.lanes((t * n, d)) < thr)
            a = torch.addmm(b1, xt, w1).clamp_(min=0.0)
            if dropout:
                a.mul_(lanes.lanes((t * n, h)) < thr)
            yield torch.addmm(b2, a, w2).view(t, n, -1)
            done += t

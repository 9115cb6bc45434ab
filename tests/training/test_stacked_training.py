"""The stacked trainer: same forward as nn.Linear, gradients equal to autograd's per model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from service.maths import uncertainty
from service.training.stacked import (
    LaneSource,
    StackData,
    StackedMLP,
    keep_masks,
    keep_thresholds,
    loss_and_grads,
    mc_samples,
    train_stacked,
)


def _model(g: int, d: int = 3, h: int = 7, seed: int = 0) -> StackedMLP:
    gen = torch.Generator().manual_seed(seed)
    m = StackedMLP.glorot(torch.linspace(0.6, 0.95, g), d, h, 1, gen)
    m.b1 += torch.randn(m.b1.shape, generator=gen) * 0.1  # non-zero biases exercise their grads
    m.b2 += 0.3
    return m


def test_single_model_without_dropout_matches_linear_stack() -> None:
    m = _model(1)
    m.keep_prob.fill_(1.0)
    first, last = nn.Linear(3, 7), nn.Linear(7, 1)
    net = nn.Sequential(first, nn.ReLU(), last)
    with torch.no_grad():
        first.weight.copy_(m.w1[0].T)
        first.bias.copy_(m.b1[0, 0])
        last.weight.copy_(m.w2[0].T)
        last.bias.copy_(m.b2[0, 0])
    x = torch.randn(1, 11, 3)
    torch.testing.assert_close(m.forward(x, None, None)[0], net(x[0]))


def test_masked_forward_is_inverted_dropout() -> None:
    m = _model(1)
    x = torch.randn(1, 5, 3)
    k_in = torch.rand(1, 5, 3) < 0.7
    k_hid = torch.rand(1, 5, 7) < 0.7
    keep = float(m.keep_prob[0])
    h = torch.relu((x[0] * k_in[0] / keep) @ m.w1[0] + m.b1[0])
    expected = (h * k_hid[0] / keep) @ m.w2[0] + m.b2[0]
    torch.testing.assert_close(m.forward(x, k_in, k_hid)[0], expected)


def test_hand_written_gradients_match_autograd_per_model_with_own_weight_decay() -> None:
    g, b = 3, 9
    m = _model(g)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(g, b, 3, generator=gen), torch.randn(g, b, 1, generator=gen)
    thr = keep_thresholds(m.keep_prob)
    lanes = LaneSource(gen)
    k_in, k_hid = keep_masks((g, b, 3), thr, lanes), keep_masks((g, b, 7), thr, lanes)
    lam = torch.tensor([0.0, 1e-2, 0.5], dtype=torch.float64)  # very different per model
    loss = loss_and_grads(m, x, y, k_in, k_hid, lam)
    for i in range(g):
        w1, b1, w2, b2 = (p[i].detach().clone().requires_grad_() for p in m.params())
        keep = float(m.keep_prob[i])
        h = torch.relu((x[i] * k_in[i] / keep) @ w1 + b1)
        out = (h * k_hid[i] / keep) @ w2 + b2
        ref = nn.functional.mse_loss(out, y[i]) + float(lam[i]) * (
            w1.square().sum() + w2.square().sum()
        )
        ref.backward()
        torch.testing.assert_close(loss[i], ref.detach())
        for p, q in zip(m.params(), (w1, b1, w2, b2), strict=True):
            assert p.grad is not None and q.grad is not None
            torch.testing.assert_close(p.grad[i], q.grad)


def test_masks_keep_each_models_own_fraction() -> None:
    keep = torch.tensor([0.5, 0.9, 0.995])
    gen = torch.Generator().manual_seed(2)
    n = 200_000
    masks = keep_masks((3, n, 1), keep_thresholds(keep), LaneSource(gen))
    frac = masks.double().mean(dim=(1, 2))
    # Binomial: SE = sqrt(p (1-p) / n) <= 0.0011; 5 SE leaves a false-alarm rate near 1e-6.
    se = torch.sqrt(keep.double() * (1 - keep.double()) / n)
    assert torch.all((frac - keep.double()).abs() < 5 * se + 2**-17)


def test_training_reduces_loss_and_weight_decay_acts_per_model() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 256, 3, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    keep = torch.tensor([0.95, 0.95])
    m = StackedMLP.glorot(keep, 3, 16, 1, gen)
    m.w1[1] = m.w1[0]  # identical twins but for their weight decay
    m.w2[1] = m.w2[0]
    data = StackData(x, y, torch.zeros(2, dtype=torch.long))
    before = [float(v) for v in (m.w1.square().sum((1, 2)) + m.w2.square().sum((1, 2)))]
    with torch.no_grad():
        mse0 = float((m.forward(x.expand(2, -1, -1), None, None)[0] - y).square().mean())
    train_stacked(m, data, torch.tensor([0.0, 1.0], dtype=torch.float64), 30, gen, batch_size=32)
    norms = [float(v) for v in (m.w1.square().sum((1, 2)) + m.w2.square().sum((1, 2)))]
    # A decay of 1 drives the weights towards 0; no decay lets them grow to fit y.
    assert norms[1] < 0.5 * before[1] < norms[0]
    with torch.no_grad():
        mse = float((m.forward(x.expand(2, -1, -1), None, None)[0] - y).square().mean())
    assert mse < 0.3 * mse0


def test_mc_samples_without_dropout_are_all_the_plain_forward() -> None:
    m = _model(2)
    m.keep_prob.fill_(1.0)
    x = torch.randn(40, 3)
    chunks = list(mc_samples(m, 1, x, 25, torch.Generator().manual_seed(0), chunk_elems=7 * 40 * 4))
    assert [c.shape[0] for c in chunks] == [4] * 6 + [1]
    s = torch.cat(chunks)
    torch.testing.assert_close(
        s, m.forward(x[None].expand(2, -1, -1), None, None)[1].expand(25, -1, -1)
    )


def test_streaming_score_matches_the_batch_formulas() -> None:
    rng = np.random.default_rng(4)
    samples = rng.normal(size=(300, 17, 1)) * 2 + 1
    y = rng.normal(size=17)
    acc = uncertainty.StreamingRegressionScore(y, tau=0.7)
    for start in range(0, 300, 64):
        acc.update(samples[start : start + 64])
    assert acc.count == 300
    assert math.isclose(acc.rmse(), uncertainty.rmse(samples.mean(0), y), rel_tol=1e-12)
    assert math.isclose(
        acc.log_likelihood(), uncertainty.mc_log_likelihood(samples, y, 0.7), rel_tol=1e-12
    )


def test_keep_probabilities_outside_the_unit_interval_are_refused() -> None:
    with pytest.raises(ValueError, match="keep probabilities"):
        keep_thresholds(torch.tensor([0.5, 0.0]))

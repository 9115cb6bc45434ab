"""The dropout networks, as plain nn.Sequential stacks a reader can hold in their head.

MLP: dropout before every weight layer (input layer included, at its own rate), none after the
last. Convnet (the paper's "Bayesian convnet"): dropout after every weight layer but the last,
conv layers included. In training the dropout modules behave as ordinary (inverted) dropout;
at serving the MC engine walks the stack and applies its own masks at each `MCDropout` site.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from service.artifacts.manifest import ConvArchitecture, DropoutSpec, MLPArchitecture, NoiseKind


class MCDropout(nn.Module):
    """Dropout site. Bernoulli: inverted dropout. Gaussian: multiplicative N(1, (1-p)/p) noise."""

    def __init__(self, rate: float, noise: NoiseKind = "bernoulli") -> None:
        super().__init__()
        self.rate = float(rate)
        self.noise = noise

    @property
    def keep_prob(self) -> float:
        return 1.0 - self.rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        if self.noise == "bernoulli":
            return nn.functional.dropout(x, self.rate, training=True)
        # Gaussian multiplicative noise with the same mean and variance as inverted dropout.
        std = math.sqrt(self.rate / self.keep_prob)
        return x * (1.0 + std * torch.randn_like(x))

    def extra_repr(self) -> str:
        return f"rate={self.rate}, noise={self.noise}"


def build_mlp(arch: MLPArchitecture, dropout: DropoutSpec) -> nn.Sequential:
    act: type[nn.Module] = nn.ReLU if arch.activation == "relu" else nn.Tanh
    layers: list[nn.Module] = []
    widths = [arch.input_dim, *arch.hidden, arch.output_dim]
    for i in range(len(widths) - 1):
        rate = dropout.input_rate if i == 0 else dropout.hidden_rate
        if rate > 0:
            layers.append(MCDropout(rate, dropout.noise))
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


def build_convnet(arch: ConvArchitecture, dropout: DropoutSpec) -> nn.Sequential:
    c, h, w = arch.input_shape
    layers: list[nn.Module] = []
    if dropout.input_rate > 0:
        layers.append(MCDropout(dropout.input_rate, dropout.noise))
    for out_c in arch.channels:
        # "same" padding, then a 2x2 max-pool; dropout after the pool sees 4x fewer elements
        # and is equivalent in distribution since max-pool commutes with the positive scaling.
        layers += [
            nn.Conv2d(c, out_c, arch.kernel_size, padding=arch.kernel_size // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            MCDropout(dropout.hidden_rate, dropout.noise),
        ]
        c, h, w = out_c, h // 2, w // 2
    layers.append(nn.Flatten())
    width = c * h * w
    for units in arch.hidden:
        layers += [
            nn.Linear(width, units),
            nn.ReLU(),
            MCDropout(dropout.hidden_rate, dropout.noise),
        ]
        width = units
    layers.append(nn.Linear(width, arch.output_dim))
    return nn.Sequential(*layers)


def build_net(arch: MLPArchitecture | ConvArchitecture, dropout: DropoutSpec) -> nn.Sequential:
    if isinstance(arch, MLPArchitecture):
        return build_mlp(arch, dropout)
    return build_convnet(arch, dropout)


def weight_layers(net: nn.Sequential) -> list[nn.Linear | nn.Conv2d]:
    return [m for m in net if isinstance(m, nn.Linear | nn.Conv2d)]


def expected_shapes(net: nn.Sequential) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}

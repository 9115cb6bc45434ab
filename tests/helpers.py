"""Builders for hand-made model folders, so tests know the exact weights they serve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from service.artifact import DropoutSpec, Manifest, MLPArchitecture, Normalization, WeightsRef
from service.nets import build_net
from service.training import save_artifact


def linear_model_dir(
    folder: Path,
    weight: np.ndarray,
    bias: float,
    input_rate: float,
    noise: str = "bernoulli",
    tau: float = 4.0,
) -> Path:
    """A single linear layer y = w.(m*x)/keep + b with input dropout only, identity scaling."""
    q = weight.size
    arch = MLPArchitecture(input_dim=q, hidden=[], output_dim=1)
    dropout = DropoutSpec(noise=noise, input_rate=input_rate, hidden_rate=0.5)  # type: ignore[arg-type]
    net = build_net(arch, dropout)
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(1, q))
        net[1].bias.fill_(bias)
    manifest = Manifest(
        name=folder.name,
        task="regression",
        architecture=arch,
        dropout=dropout,
        tau=tau,
        input_shape=[q],
        output_names=["y"],
        normalization=Normalization(x_mean=[0.0] * q, x_std=[1.0] * q, y_mean=[0.0], y_std=[1.0]),
        uncertainty_metric="std",
        threshold=1.0,
        weights=WeightsRef(sha256="0" * 64),
    )
    save_artifact(folder, manifest, net)
    return folder

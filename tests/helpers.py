"""Builders for hand-made model folders, so tests know the exact weights they serve; and a
loader for the repository's scripts, which are files, not packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from service.artifacts.manifest import (
    DropoutSpec,
    Manifest,
    MLPArchitecture,
    Normalization,
    WeightsRef,
)
from service.engines.nets import build_net
from service.training.train import save_artifact


def load_script(path: Path) -> ModuleType:
    """The module of a script under bench/, scripts/ or examples/, imported from its file."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    linear = net[1]
    assert isinstance(linear, nn.Linear)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(1, q))
        linear.bias.fill_(bias)
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


def linear_classifier_dir(
    folder: Path, weight: np.ndarray, bias: np.ndarray, input_rate: float
) -> Path:
    """K classes from one input with dropout: logits = w·(m·x)/keep + b, so each MC sample's
    softmax is exactly one of two vectors, softmax(w·x/keep + b) (prob keep) or softmax(b)."""
    k = weight.size
    arch = MLPArchitecture(input_dim=1, hidden=[], output_dim=k)
    dropout = DropoutSpec(input_rate=input_rate, hidden_rate=0.5)
    net = build_net(arch, dropout)
    linear = net[1]
    assert isinstance(linear, nn.Linear)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32).reshape(k, 1))
        linear.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    manifest = Manifest(
        name=folder.name,
        task="classification",
        architecture=arch,
        dropout=dropout,
        input_shape=[1],
        output_names=[f"c{i}" for i in range(k)],
        normalization=Normalization(x_mean=[0.0], x_std=[1.0]),
        uncertainty_metric="predictive_entropy",
        threshold=1.0,
        weights=WeightsRef(sha256="0" * 64),
    )
    save_artifact(folder, manifest, net)
    return folder

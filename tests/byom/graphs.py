"""Hand-built ONNX graphs and small torch modules with dropout, and the MC comparison they share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

Q, H, D = 5, 32, 3


def mlp_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((Q, H)).astype(np.float32)
    w2 = (rng.standard_normal((H, D)) / np.sqrt(H)).astype(np.float32)
    return w1, w2


def dropout_graph(
    path: Path, opset: int, rate: float = 0.3, batch: str | int = "N", dropout: bool = True
) -> Path:
    """x -> MatMul W1 -> Relu -> Dropout(rate) -> MatMul W2, written in the style of `opset`:
    opset >= 12 gives the ratio and training_mode as inputs, older opsets a ratio attribute."""
    w1, w2 = mlp_weights()
    inits = [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")]
    nodes = [
        helper.make_node("MatMul", ["inp", "W1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["hr"], name="act"),
    ]
    if not dropout:
        nodes.append(helper.make_node("Identity", ["hr"], ["hd"]))
    elif opset >= 12:
        inits.append(numpy_helper.from_array(np.array(rate, np.float32), "ratio"))
        inits.append(numpy_helper.from_array(np.array(True), "training"))
        nodes.append(helper.make_node("Dropout", ["hr", "ratio", "training"], ["hd"], name="drop"))
    else:
        nodes.append(helper.make_node("Dropout", ["hr"], ["hd"], name="drop", ratio=rate))
    nodes.append(helper.make_node("MatMul", ["hd", "W2"], ["out"], name="fc2"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [batch, Q])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, D])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7 if opset < 15 else 8
    onnx.save(model, path)
    return path


def graph_reference(x: np.ndarray, rate: float, samples: int, seed: int) -> np.ndarray:
    """The graph's own MC dropout in numpy, (T, N, D): fresh inverted-dropout masks per sample."""
    w1, w2 = mlp_weights()
    h = np.maximum(x.astype(np.float64) @ w1, 0.0)
    keep = np.random.default_rng(seed).random((samples, *h.shape)) >= rate
    out: np.ndarray = (h[None] * keep / (1 - rate)) @ w2
    return out


def assert_same_mc(a: np.ndarray, b: np.ndarray, z: float = 5.0) -> None:
    """(T, N, D) samples from two independent MC runs agree in mean and variance.

    Each comparison is a difference of two independent estimates divided by its standard
    error: for means, sqrt(var_a / T_a + var_b / T_b); for variances, the SE of a sample
    variance, sqrt(Var((y - mean)^2) / T), combined the same way. |difference| <= 5 SE fails
    with probability under 1e-6 per entry when the distributions match.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ta, tb = len(a), len(b)
    se_mean = np.sqrt(a.var(0) / ta + b.var(0) / tb) + 1e-9
    assert np.all(np.abs(a.mean(0) - b.mean(0)) <= z * se_mean), "MC means differ"
    da, db = (a - a.mean(0)) ** 2, (b - b.mean(0)) ** 2
    se_var = np.sqrt(da.var(0) / ta + db.var(0) / tb) + 1e-9
    assert np.all(np.abs(a.var(0) - b.var(0)) <= z * se_var), "MC variances differ"


# ------------------------------------------------------------------ torch modules


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(Q, H),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(H, H),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(H, D),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class FunctionalMLP(nn.Module):
    """Dropout only through F.dropout in forward, keyed on self.training."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(Q, H), nn.Linear(H, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.fc1(x)), 0.25, training=self.training)
        out: torch.Tensor = self.fc2(h)
        return out


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.dropout(F.relu(self.bn(self.conv(x))), 0.1, training=self.training)
        return x + h


class ResNet(nn.Module):
    """A small residual convnet: BatchNorm, Dropout2d, a functional dropout, a dropout head."""

    def __init__(self, c: int = 6, classes: int = 4) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c)
        self.block, self.drop2d = Block(c), nn.Dropout2d(0.2)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c * 36, 24), nn.ReLU(), nn.Dropout(0.3), nn.Linear(24, classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop2d(self.block(F.relu(self.bn(self.stem(x)))))
        out: torch.Tensor = self.head(h)
        return out


class ShapeFromPrefix(nn.Module):
    """Reshapes after the dropout with a size read before it: that size must follow the T*N
    replicated rows, not the N input rows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.drop, self.fc = (
            nn.Conv2d(1, 3, 3, padding=1),
            nn.Dropout(0.3),
            nn.Linear(108, D),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        rows = h.size(0)
        out: torch.Tensor = self.fc(self.drop(h).reshape(rows, -1))
        return out


def with_running_stats(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm running statistics far from a batch's own, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.5)
    return module

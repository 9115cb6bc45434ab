"""Serve your own PyTorch network with MC dropout: train, package, calibrate, serve.

A small residual convnet on scikit-learn's 8x8 digits, with the dropout kinds networks use:
BatchNorm, a Dropout2d, a functional F.dropout inside a residual block, and a dropout head.
Run it from the repository root (about half a minute on a laptop CPU):

    python examples/bring_your_own.py --out build/byom

It writes build/byom/models/digits-resnet, calibrates its abstain threshold on held-out digits,
and answers a request through the REST app in process.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x)))
        # Functional dropout keyed on self.training: package_torch finds it too.
        h = F.dropout(h, p=0.1, training=self.training)
        return x + h


class DigitsResNet(nn.Module):
    """Raw 0-16 pixel values in, class logits out."""

    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.block = ResidualBlock(channels)
        self.drop2d = nn.Dropout2d(0.1)  # drops whole channels
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * 16, 64),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x / 16.0)))
        h = F.max_pool2d(self.drop2d(self.block(h)), 2)
        out: torch.Tensor = self.head(h)
        return out


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 1, 8, 8) float32 pixels and integer labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32)[:, None], d.target.astype(np.int64)


def train(x: np.ndarray, y: np.ndarray, epochs: int = 15, seed: int = 0) -> DigitsResNet:
    torch.manual_seed(seed)
    net = DigitsResNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            F.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    return net.eval()


async def ask_server(model_dir: Path, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request to the REST app, run in process with its start-up (model loading) around it."""
    import httpx

    from service.api.app import create_app
    from service.config import Settings

    app = create_app(Settings(model_dir=str(model_dir)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mcdrop") as client:
            r = await client.post(f"/v1/models/{name}/predict", json=body)
            r.raise_for_status()
            reply: dict[str, Any] = r.json()
            return reply


def main(out: Path, epochs: int = 15, train_rows: int = 1200) -> dict[str, object]:
    from service import ClassificationResult, load_model, package_torch
    from service.cli import main as mcdrop

    x, y = digits()
    order = np.random.default_rng(0).permutation(len(x))
    train_idx, held_idx, test_idx = order[:1200], order[1200:1500], order[1500:]
    net = train(x[train_idx[:train_rows]], y[train_idx[:train_rows]], epochs)

    # 1. Package: the graph, its dropout sites and weights (ONNX + safetensors + JSON).
    folder = package_torch(
        net,
        x[train_idx[:8]],
        out / "models" / "digits-resnet",
        task="classification",
        class_labels=[str(k) for k in range(10)],
        overwrite=True,
    )

    # 2. Calibrate: refer at most 10% of items, chosen by MC uncertainty on held-out digits.
    np.savez(out / "heldout.npz", x=x[held_idx].reshape(len(held_idx), -1), y=y[held_idx])
    mcdrop(
        ["calibrate", str(folder), "--data", str(out / "heldout.npz"), "--max-referral-rate", "0.1"]
    )

    # 3. Serve: the library, then the REST app (in process here; `mcdrop serve` in production).
    model = load_model(folder)
    pred = model.predict(x[test_idx], samples=50, seed=0)
    assert isinstance(pred, ClassificationResult)  # a classifier's prediction carries labels
    accuracy = float(np.mean(pred.label == y[test_idx]))
    kept = ~pred.abstain
    body = {"inputs": x[test_idx[:2]].tolist(), "samples": 50, "seed": 0}
    reply = asyncio.run(ask_server(out / "models", "digits-resnet", body))
    return {
        "test_accuracy": round(accuracy, 3),
        "accuracy_on_kept": round(float(np.mean(pred.label[kept] == y[test_idx][kept])), 3),
        "referred": round(float(np.mean(pred.abstain)), 3),
        "first_reply": reply["predictions"][0]["label"],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/byom"))
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(main(args.out, args.epochs))

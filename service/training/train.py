"""Training dropout networks the paper's way, and writing them as self-describing artifacts.

Weight decay follows Gal & Ghahramani: lambda = keep_prob * l^2 / (2 N tau) on every weight
matrix (biases are not decayed), added to the mean data loss, so that the optimum is the
variational approximation whose model precision is tau. Classification uses the same formula
with tau = 1 (the softmax likelihood has no noise precision).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm import tqdm

from service.artifacts.data import Dataset
from service.artifacts.manifest import (
    ConvArchitecture,
    DropoutSpec,
    Manifest,
    MLPArchitecture,
    Normalization,
    WeightsRef,
    save_weights,
    write_manifest,
)
from service.engines.nets import build_net, weight_layers
from service.maths import uncertainty
from service.training.rows import Rows, prepare_rows
from service.training.validation_figures import ValidationFigures, epoch_point, validation_figures


@dataclass
class TrainConfig:
    task: Literal["regression", "classification"]
    name: str = "model"
    arch: Literal["mlp", "convnet"] = "mlp"
    hidden: int = 50
    layers: int = 2
    activation: Literal["relu", "tanh"] = "relu"
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    dropout: float = 0.1
    input_dropout: float | None = None  # defaults to `dropout` for MLPs, 0 for convnets
    noise: Literal["bernoulli", "gaussian"] = "bernoulli"
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.1
    length_scale: float = 1e-2
    tau: float | None = None  # regression: model precision in target units; None = fit on val
    default_samples: int = 100
    max_samples: int = 10_000
    input_scale: float = 1.0  # e.g. 1/255 for 8-bit images
    image_zero: Literal["black", "white"] = "black"  # how reviewers see an image's value 0
    # Classification with validation rows: stop when the MC validation NLL (val_samples masks)
    # has not improved for this many epochs, and keep the weights of its best epoch.
    early_stopping: int | None = None
    val_samples: int = 20


@dataclass
class TrainResult:
    manifest: Manifest
    net: nn.Sequential
    val_metrics: dict[str, float]


def validation_split(
    n: int, val_fraction: float, seed: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    return perm[n_val:], perm[:n_val]


def train(
    ds: Dataset, cfg: TrainConfig, out: Path | None = None, progress: bool = True
) -> TrainResult:
    """Train on `ds`, hold out cfg.val_fraction for metrics, and write the artifact to `out`."""
    torch.manual_seed(cfg.seed)
    x_all = np.asarray(ds.x, np.float64) * cfg.input_scale
    input_shape = list(x_all.shape[1:])
    tr, va = validation_split(len(x_all), cfg.val_fraction, cfg.seed)
    if cfg.early_stopping is not None and (cfg.task != "classification" or not len(va)):
        raise ValueError("early stopping needs a classification task and val_fraction > 0")
    if cfg.early_stopping is not None and (cfg.early_stopping < 1 or cfg.val_samples < 1):
        raise ValueError("early_stopping (patience) and val_samples must be at least 1")
    rows = prepare_rows(ds, x_all, tr, cfg.task, images=cfg.arch == "convnet")
    arch, dropout = _architecture(cfg, input_shape, rows.out_dim)
    net = build_net(arch, dropout)
    tau_train, lam = _weight_decay(cfg, rows, len(tr))
    targets = rows.y_normalised if cfg.task == "regression" else rows.labels
    assert targets is not None
    check: Callable[[nn.Sequential], dict[str, float]] | None = None
    if cfg.early_stopping is not None:
        assert rows.labels is not None
        x_va, y_va = rows.x[va], rows.labels[va]

        def check(n: nn.Sequential) -> dict[str, float]:
            return epoch_point(n, input_shape, x_va, y_va, cfg.val_samples, cfg.seed)

    xt, yt = torch.from_numpy(rows.x[tr]), torch.from_numpy(targets[tr])
    history, best_epoch = _fit(net, cfg, xt, yt, lam, progress, check)
    net.eval()
    # Held-out metrics with MC dropout, and tau / threshold from them.
    eval_idx = va if len(va) else tr[: min(len(tr), 1000)]
    held = validation_figures(net, input_shape, rows, eval_idx, cfg.tau, cfg.seed)
    training = {
        **asdict(cfg),
        "n_train": len(tr),
        "n_val": len(va),
        "weight_decay": lam,
        "tau_for_weight_decay": tau_train,
        "tau_source": "given"
        if cfg.tau is not None or cfg.task != "regression"
        else "validation_ml",
        "threshold_source": "placeholder: 90th percentile of held-out uncertainty",
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        **({"best_epoch": best_epoch, "history": history} if best_epoch is not None else {}),
    }
    manifest = _manifest(ds, cfg, (arch, dropout), input_shape, rows, held, training)
    if out is not None:
        save_artifact(out, manifest, net)
    return TrainResult(manifest, net, held.metrics)


def _architecture(
    cfg: TrainConfig, input_shape: list[int], out_dim: int
) -> tuple[MLPArchitecture | ConvArchitecture, DropoutSpec]:
    images = cfg.arch == "convnet"
    input_rate = (
        cfg.input_dropout if cfg.input_dropout is not None else (0.0 if images else cfg.dropout)
    )
    dropout = DropoutSpec(noise=cfg.noise, input_rate=input_rate, hidden_rate=cfg.dropout)
    if images:
        conv = ConvArchitecture(
            input_shape=input_shape,
            channels=cfg.conv_channels,
            hidden=[cfg.hidden] * max(cfg.layers - 1, 1),
            output_dim=out_dim,
        )
        return conv, dropout
    mlp = MLPArchitecture(
        input_dim=int(np.prod(input_shape)),
        hidden=[cfg.hidden] * cfg.layers,
        output_dim=out_dim,
        activation=cfg.activation,
    )
    return mlp, dropout


def _weight_decay(cfg: TrainConfig, rows: Rows, n_train: int) -> tuple[float, float]:
    """(tau behind the weight decay, lambda). Without a given tau, weight decay assumes noise of
    10% of the target's std (tau_0), and tau itself is fitted on validation after training."""
    tau_train = 1.0
    if cfg.task == "regression":
        assert rows.y_std is not None
        tau_train = cfg.tau if cfg.tau is not None else 1.0 / (0.01 * float(np.mean(rows.y_std**2)))
    keep = 1.0 - cfg.dropout
    return tau_train, uncertainty.weight_decay_from_tau(tau_train, keep, cfg.length_scale, n_train)


def _fit(
    net: nn.Sequential,
    cfg: TrainConfig,
    xt: torch.Tensor,
    yt: torch.Tensor,
    lam: float,
    progress: bool,
    check: Callable[[nn.Sequential], dict[str, float]] | None = None,
) -> tuple[list[dict[str, float]], int | None]:
    """cfg.epochs of Adam over shuffled minibatches: data loss plus lam x the weights' squares.

    With `check` (early stopping), every epoch's validation figures and the best epoch by MC
    NLL, whose weights the net is left with."""
    n_train = len(xt)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss_fn: nn.Module = nn.MSELoss() if cfg.task == "regression" else nn.CrossEntropyLoss()
    weights = [m.weight for m in weight_layers(net)]
    gen = torch.Generator().manual_seed(cfg.seed)
    net.train()
    # disable=None: no bar when stderr is not a terminal (a log file or a pipe).
    bar = tqdm(
        range(cfg.epochs),
        desc=f"train {cfg.name}",
        disable=None if progress else True,
        unit="epoch",
    )
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    for epoch in bar:
        perm = torch.randperm(n_train, generator=gen)
        total = 0.0
        for i in range(0, n_train, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[idx]), yt[idx]) + lam * sum((w**2).sum() for w in weights)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        bar.set_postfix(loss=f"{total / n_train:.4f}")
        if check is None or cfg.early_stopping is None:
            continue
        point = check(net)
        history.append({"epoch": epoch + 1, "train_loss": total / n_train, **point})
        net.train()
        if best is None or point["mc_nll"] < best[0]:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best = (point["mc_nll"], epoch + 1, state)
        elif epoch + 1 - best[1] >= cfg.early_stopping:
            break
    if best is None:
        return history, None
    net.load_state_dict(best[2])
    return history, best[1]


def _manifest(
    ds: Dataset,
    cfg: TrainConfig,
    network: tuple[MLPArchitecture | ConvArchitecture, DropoutSpec],
    input_shape: list[int],
    rows: Rows,
    held: ValidationFigures,
    training: dict[str, Any],
) -> Manifest:
    regression = cfg.task == "regression"
    y_mean, y_std = rows.y_mean, rows.y_std
    return Manifest(
        name=cfg.name,
        task=cfg.task,
        architecture=network[0],
        dropout=network[1],
        tau=held.tau,
        input_shape=input_shape,
        feature_names=ds.feature_names,
        output_names=(ds.target_names or ["y"]) if regression else ["probabilities"],
        class_labels=rows.class_labels,
        normalization=Normalization(
            input_scale=cfg.input_scale,
            x_mean=[float(v) for v in np.ravel(rows.x_mean)],
            x_std=[float(v) for v in np.ravel(rows.x_std)],
            y_mean=None if y_mean is None else [float(v) for v in y_mean],
            y_std=None if y_std is None else [float(v) for v in y_std],
        ),
        image_zero=cfg.image_zero,
        default_samples=cfg.default_samples,
        max_samples=cfg.max_samples,
        uncertainty_metric=held.metric,
        threshold=held.threshold,
        calibration=None,
        training=training,
        metrics=held.metrics,
        weights=WeightsRef(sha256="0" * 64),
    )


def save_artifact(out: Path, manifest: Manifest, net: nn.Sequential) -> Manifest:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    manifest.weights = WeightsRef(sha256=save_weights(out, tensors))
    write_manifest(out, manifest)
    return manifest


def summary(result: TrainResult) -> dict[str, Any]:
    m = result.manifest
    best = {"best_epoch": m.training["best_epoch"]} if "best_epoch" in m.training else {}
    return {"name": m.name, "task": m.task, "tau": m.tau, **best, **result.val_metrics}

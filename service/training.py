"""Training dropout networks the paper's way, and writing them as self-describing artifacts.

Weight decay follows Gal & Ghahramani: lambda = keep_prob * l^2 / (2 N tau) on every weight
matrix (biases are not decayed), added to the mean data loss, so that the optimum is the
variational approximation whose model precision is tau. Classification uses the same formula
with tau = 1 (the softmax likelihood has no noise precision).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from tqdm import tqdm

from service import uncertainty
from service.artifact import (
    ConvArchitecture,
    DropoutSpec,
    Manifest,
    MLPArchitecture,
    Normalization,
    WeightsRef,
    save_weights,
    write_manifest,
)
from service.data import Dataset
from service.engines.base import SampleJob
from service.engines.torch_engine import TorchEngine
from service.nets import build_net, weight_layers


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


def _standardise(a: NDArray[np.float64], axis: int = 0) -> tuple[NDArray[np.float64], ...]:
    mean = a.mean(axis=axis)
    std = a.std(axis=axis)
    std = np.where(std > 0, std, 1.0)  # a constant column is left as is, not divided by zero
    return mean, std


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
    images = cfg.arch == "convnet"
    # Images get one global mean/std (per-pixel statistics would blow up on constant borders).
    if images:
        x_mean = np.array([x_all[tr].mean()])
        x_std = np.array([x_all[tr].std() or 1.0])
        xn = ((x_all - x_mean[0]) / x_std[0]).astype(np.float32)
    else:
        x_mean, x_std = _standardise(x_all[tr])
        xn = ((x_all - x_mean) / x_std).astype(np.float32)

    regression = cfg.task == "regression"
    y_raw = np.asarray(ds.y, np.float64)
    y_mean: NDArray[np.float64] | None = None
    y_std: NDArray[np.float64] | None = None
    if regression:
        y2 = y_raw.reshape(len(y_raw), -1)
        y_mean, y_std = _standardise(y2[tr])
        yn = ((y2 - y_mean) / y_std).astype(np.float32)
        out_dim = y2.shape[1]
        class_labels = None
    else:
        labels = y_raw.astype(np.int64).reshape(-1)
        out_dim = int(labels.max()) + 1
        class_labels = ds.class_labels or [str(i) for i in range(out_dim)]
        out_dim = max(out_dim, len(class_labels))

    input_rate = (
        cfg.input_dropout if cfg.input_dropout is not None else (0.0 if images else cfg.dropout)
    )
    dropout = DropoutSpec(noise=cfg.noise, input_rate=input_rate, hidden_rate=cfg.dropout)
    arch: MLPArchitecture | ConvArchitecture
    if images:
        arch = ConvArchitecture(
            input_shape=input_shape, channels=cfg.conv_channels, hidden=[cfg.hidden] * max(cfg.layers - 1, 1),
            output_dim=out_dim,
        )  # fmt: skip
    else:
        arch = MLPArchitecture(
            input_dim=int(np.prod(input_shape)), hidden=[cfg.hidden] * cfg.layers, output_dim=out_dim,
            activation=cfg.activation,
        )  # fmt: skip
    net = build_net(arch, dropout)

    n_train = len(tr)
    keep = 1.0 - cfg.dropout
    # Without a given tau, weight decay assumes noise of 10% of the target's std (tau_0), and
    # tau itself is then fitted by maximum validation log-likelihood below.
    tau_train = 1.0
    if regression:
        assert y_std is not None
        tau_train = cfg.tau if cfg.tau is not None else 1.0 / (0.01 * float(np.mean(y_std**2)))
    lam = uncertainty.weight_decay_from_tau(tau_train, keep, cfg.length_scale, n_train)

    xt = torch.from_numpy(xn[tr])
    yt = torch.from_numpy(yn[tr]) if regression else torch.from_numpy(labels[tr])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss_fn: nn.Module = nn.MSELoss() if regression else nn.CrossEntropyLoss()
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
        if cfg.early_stopping is None:
            continue
        point = _validation_point(net, input_shape, xn[va], labels[va], cfg.val_samples, cfg.seed)
        history.append({"epoch": epoch + 1, "train_loss": total / n_train, **point})
        net.train()
        if best is None or point["mc_nll"] < best[0]:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best = (point["mc_nll"], epoch + 1, state)
        elif epoch + 1 - best[1] >= cfg.early_stopping:
            break
    if best is not None:
        net.load_state_dict(best[2])
    net.eval()

    # Held-out metrics with MC dropout (T=100, fixed seed), and tau / threshold from them.
    eval_idx = va if len(va) else tr[: min(len(tr), 1000)]
    engine = TorchEngine(net, input_shape, device="cpu")
    raw = engine.sample_many([SampleJob(xn[eval_idx], 100, cfg.seed)])[0]
    metrics: dict[str, float] = {}
    tau_final: float | None = None
    if regression:
        assert y_mean is not None and y_std is not None
        ys = raw.astype(np.float64) * y_std + y_mean
        y_eval = y2[eval_idx]
        tau_final = cfg.tau if cfg.tau is not None else _fit_tau(ys, y_eval)
        mom = uncertainty.regression_moments(ys, tau_final)
        metrics = {
            "rmse": uncertainty.rmse(mom.mean, y_eval),
            "log_likelihood": uncertainty.mc_log_likelihood(ys, y_eval, tau_final),
        }
        metric = "std"
        unc = mom.std.max(axis=1)
    else:
        probs = uncertainty.softmax(raw, axis=2)
        cm = uncertainty.classification_measures(probs)
        metrics = {
            "accuracy": uncertainty.accuracy(cm.probabilities, labels[eval_idx]),
            "nll": uncertainty.nll(cm.probabilities, labels[eval_idx]),
            "brier": uncertainty.brier(cm.probabilities, labels[eval_idx]),
        }
        metric = "predictive_entropy"
        unc = cm.predictive_entropy
    metrics["n_eval"] = float(len(eval_idx))
    # Placeholder until `mcdrop calibrate`: refer the 10% most uncertain held-out rows.
    threshold = float(np.quantile(unc, 0.9))

    manifest = Manifest(
        name=cfg.name,
        task=cfg.task,
        architecture=arch,
        dropout=dropout,
        tau=tau_final,
        input_shape=input_shape,
        feature_names=ds.feature_names,
        output_names=(ds.target_names or ["y"]) if regression else ["probabilities"],
        class_labels=class_labels,
        normalization=Normalization(
            input_scale=cfg.input_scale,
            x_mean=[float(v) for v in np.ravel(x_mean)],
            x_std=[float(v) for v in np.ravel(x_std)],
            y_mean=None if y_mean is None else [float(v) for v in y_mean],
            y_std=None if y_std is None else [float(v) for v in y_std],
        ),
        image_zero=cfg.image_zero,
        default_samples=cfg.default_samples,
        max_samples=cfg.max_samples,
        uncertainty_metric=metric,
        threshold=threshold,
        calibration=None,
        training={
            **asdict(cfg),
            "n_train": n_train,
            "n_val": len(va),
            "weight_decay": lam,
            "tau_for_weight_decay": tau_train,
            "tau_source": "given" if cfg.tau is not None or not regression else "validation_ml",
            "threshold_source": "placeholder: 90th percentile of held-out uncertainty",
            "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            **({"best_epoch": best[1], "history": history} if best is not None else {}),
        },
        metrics=metrics,
        weights=WeightsRef(sha256="0" * 64),
    )
    if out is not None:
        save_artifact(out, manifest, net)
    return TrainResult(manifest, net, metrics)


def save_artifact(out: Path, manifest: Manifest, net: nn.Sequential) -> Manifest:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    manifest.weights = WeightsRef(sha256=save_weights(out, tensors))
    write_manifest(out, manifest)
    return manifest


def _validation_point(
    net: nn.Sequential,
    input_shape: list[int],
    x: NDArray[np.float32],
    labels: NDArray[np.int64],
    samples: int,
    seed: int,
) -> dict[str, float]:
    """Validation NLL and accuracy after an epoch: MC dropout (`samples` masks) and standard."""
    net.eval()
    raw = TorchEngine(net, input_shape, device="cpu").sample_many([SampleJob(x, samples, seed)])[0]
    mc = uncertainty.softmax(raw, axis=2).mean(axis=0)
    with torch.no_grad():
        std = uncertainty.softmax(net(torch.from_numpy(x)).numpy(), axis=1)
    return {
        "mc_nll": uncertainty.nll(mc, labels),
        "standard_nll": uncertainty.nll(std, labels),
        "mc_accuracy": uncertainty.accuracy(mc, labels),
        "standard_accuracy": uncertainty.accuracy(std, labels),
    }


def _fit_tau(ys: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """tau maximising the paper's MC log-likelihood on held-out rows (see uncertainty.fit_tau)."""
    return uncertainty.fit_tau(ys, y)


def summary(result: TrainResult) -> dict[str, Any]:
    m = result.manifest
    best = {"best_epoch": m.training["best_epoch"]} if "best_epoch" in m.training else {}
    return {"name": m.name, "task": m.task, "tau": m.tau, **best, **result.val_metrics}

"""PNG plots for `mcdrop evaluate` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import NDArray
from scipy import stats

from service.evaluation.heldout import Scored
from service.maths import uncertainty
from service.maths.selective import risk_coverage


def risk_coverage_plot(scored: list[Scored], path: Path) -> None:
    """Retained error (or RMSE) against coverage, one line per method and measure."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=90)
    for s in scored:
        for metric, u in s.uncertainty.items():
            rc = risk_coverage(u, s.loss)
            risk = np.sqrt(rc.risk) if s.task == "regression" else rc.risk
            style = "-" if s.method == "mc_dropout" else "--"
            ax.plot(rc.coverage, risk, style, label=f"{s.method}: {metric}", lw=1.4)
    ylabel = "retained RMSE" if scored[0].task == "regression" else "retained error rate"
    _label(
        ax, "coverage (fraction retained)", ylabel, "Risk-coverage: refer the most uncertain first"
    )
    _save(fig, path)


def reliability_plot(
    scored: list[Scored], y: NDArray[np.float64], path: Path, tau: float | None = None
) -> None:
    """Classification: accuracy against confidence in 15 bins. Regression: interval coverage."""
    fig, ax = plt.subplots(figsize=(5, 4.6), dpi=90)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for s in scored:
        if s.task == "classification":
            assert s.probabilities is not None
            rb = uncertainty.reliability_bins(s.probabilities, y.astype(np.int64))
            filled = rb.count > 0
            ece = uncertainty.expected_calibration_error(s.probabilities, y.astype(np.int64))
            ax.plot(
                rb.confidence[filled],
                rb.accuracy[filled],
                "o-",
                ms=3,
                label=f"{s.method} (ECE {ece:.3f})",
            )
        else:
            assert s.mean is not None and s.samples is not None
            # Fraction of targets inside the central p-interval of a Gaussian with the predictive
            # mean and std; standard dropout's predictive variance is the constant 1/tau.
            std = s.uncertainty.get("std")
            if std is None:
                if tau is None:
                    continue
                std = np.full(len(s.loss), (1.0 / tau) ** 0.5)
            z = np.abs(y - s.mean).max(axis=1) / np.maximum(std, 1e-12)
            ps = np.linspace(0.05, 0.95, 19)
            inside = [float(np.mean(z <= stats.norm.ppf(0.5 + p / 2))) for p in ps]
            ax.plot(ps, inside, "o-", ms=3, label=s.method)
    regression = scored[0].task == "regression"
    _label(
        ax,
        "nominal interval probability" if regression else "confidence (max probability)",
        "empirical coverage" if regression else "accuracy",
        "Reliability diagram",
    )
    _save(fig, path)


def uncertainty_histograms(s: Scored, path: Path) -> None:
    """Each measure's distribution for correct and wrong predictions (regression: by median
    error)."""
    metrics = list(s.uncertainty)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), dpi=90)
    axes_list = np.atleast_1d(axes).ravel()
    if s.task == "classification":
        good, labels = s.loss == 0, ("correct", "wrong")
    else:
        good, labels = s.loss <= np.median(s.loss), ("error <= median", "error > median")
    for ax, metric in zip(axes_list, metrics, strict=True):
        u = s.uncertainty[metric]
        bins = np.linspace(float(np.min(u)), float(np.max(u)) or 1.0, 31)
        ax.hist(u[good], bins=bins, alpha=0.6, density=True, label=labels[0])
        ax.hist(u[~good], bins=bins, alpha=0.6, density=True, label=labels[1])
        ax.set_title(metric, fontsize=9)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle(f"{s.method}: uncertainty of correct vs wrong predictions", fontsize=10)
    _save(fig, path)


def tuning_plot(trace: dict[str, Any], path: Path) -> None:
    """`mcdrop tune`'s search (tuning.json): every network tried, its epochs and its tau."""
    search = trace["search"]
    points, chosen = search["points"], search["chosen"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=90)
    rounds = sorted({p["round"] for p in points})
    for r in rounds:
        pts = [p for p in points if p["round"] == r]
        axes[0].plot(
            [p["dropout"] for p in pts],
            [p["val_log_likelihood"] for p in pts],
            "o",
            label=f"round {r}",
        )
        axes[2].plot([p["dropout"] for p in pts], [p["tau"] for p in pts], "o", label=f"round {r}")
    for ax in (axes[0], axes[2]):
        ax.plot(
            [chosen["dropout"]],
            [chosen["val_log_likelihood" if ax is axes[0] else "tau"]],
            "k*",
            ms=12,
            label="chosen",
        )
        ax.set_xscale("log")
    for p in points:
        cps = p["checkpoints"]
        axes[1].plot(
            [c["epoch"] for c in cps],
            [c["val_log_likelihood"] for c in cps],
            ".-",
            lw=0.8,
            label=f"p={p['dropout']:.3g}",
        )
    lo, hi = search["tau_range_start"]
    axes[2].axhspan(lo, hi, color="grey", alpha=0.15, label="first tau bracket")
    axes[2].set_yscale("log")
    _label(axes[0], "dropout rate", "validation log-likelihood", "Dropout rate (grid, log)")
    _label(axes[1], "epoch", "validation log-likelihood", "Early stopping")
    _label(axes[2], "dropout rate", "tau fitted on validation", "tau (continuous, log)")
    _save(fig, path)


def _label(ax: Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)  # pyplot keeps every open figure alive otherwise

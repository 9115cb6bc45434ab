"""PNG plots of `mcdrop evaluate --ood` and `--shift` (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

from service.evaluation.plots import _save

SHIFT_FIGURES = ("accuracy", "nll", "ece", "aurc", "referral_rate")


def ood_histograms(
    in_dist: dict[str, NDArray[np.float64]],
    ood: dict[str, dict[str, NDArray[np.float64]]],
    thresholds: dict[str, float],
    path: Path,
) -> None:
    """Per measure: the in-distribution histogram against each OOD set's, threshold marked."""
    metrics = list(in_dist)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), dpi=90)
    for ax, metric in zip(np.atleast_1d(axes).ravel(), metrics, strict=True):
        pooled = np.concatenate([in_dist[metric], *(o[metric] for o in ood.values())])
        pooled = pooled[np.isfinite(pooled)]
        bins = np.linspace(float(pooled.min()), float(pooled.max()) or 1.0, 31)
        ax.hist(in_dist[metric], bins=bins, density=True, alpha=0.5, label="in-distribution")
        for name, scores in ood.items():
            ax.hist(scores[metric], bins=bins, density=True, histtype="step", lw=1.4, label=name)
        if metric in thresholds:
            ax.axvline(thresholds[metric], color="k", ls=":", label="calibrated threshold")
        ax.set_title(metric, fontsize=9)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.suptitle("MC dropout uncertainty: in-distribution against out-of-distribution", fontsize=10)
    _save(fig, path)


def shift_curves(report: dict[str, Any], path: Path) -> None:
    """Accuracy, NLL, ECE, AURC and referral rate against shift intensity, MC beside standard."""
    steps = report["intensities"]
    x = [s["intensity"] for s in steps]
    fig, axes = plt.subplots(1, len(SHIFT_FIGURES), figsize=(3.3 * len(SHIFT_FIGURES), 3.2), dpi=90)
    for ax, key in zip(axes, SHIFT_FIGURES, strict=True):
        for method, style in (("mc_dropout", "o-"), ("standard_dropout", "s--")):
            y = [s[method].get(key) for s in steps]
            if all(v is not None for v in y):
                ax.plot(x, y, style, ms=3, label=method.replace("_", " "))
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(report["unit"], fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{report['model']} under '{report['shift']}' shift (n={report['n']})", fontsize=10
    )
    _save(fig, path)

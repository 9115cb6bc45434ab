"""The figures of `mcdrop evaluate`, computed from scored held-out rows (no torch, no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.evaluation.heldout import Scored
from service.maths import uncertainty
from service.maths.selective import REFERRAL_RATES, aurc, retained_risk

ECE_BINS = 15


def headline(s: Scored, y: NDArray[np.float64], tau: float | None) -> dict[str, float]:
    """Accuracy, NLL, Brier, ECE (classification) or RMSE and the paper's test LL (regression)."""
    if s.task == "classification":
        assert s.probabilities is not None
        labels = y.astype(np.int64)
        return {
            "accuracy": uncertainty.accuracy(s.probabilities, labels),
            "nll": uncertainty.nll(s.probabilities, labels),
            "brier": uncertainty.brier(s.probabilities, labels),
            "ece": uncertainty.expected_calibration_error(s.probabilities, labels, ECE_BINS),
        }
    assert s.mean is not None and s.samples is not None and tau is not None
    return {
        "rmse": uncertainty.rmse(s.mean, y),
        "log_likelihood": uncertainty.mc_log_likelihood(s.samples, y, tau),
    }


def referral_table(s: Scored, metric: str) -> list[dict[str, float]]:
    """Retained accuracy (or RMSE) after referring 0, 5, 10, 20, 30% most uncertain rows."""
    rows = []
    for rate, kept, risk in retained_risk(s.uncertainty[metric], s.loss, REFERRAL_RATES):
        value = float(np.sqrt(risk)) if s.task == "regression" else 1.0 - risk
        key = "retained_rmse" if s.task == "regression" else "retained_accuracy"
        rows.append({"referral_rate": rate, "retained": kept, key: value})
    return rows


def method_report(s: Scored, y: NDArray[np.float64], tau: float | None) -> dict[str, Any]:
    root = s.task == "regression"
    return {
        **headline(s, y, tau),
        # Regression AURC is the area under the retained-RMSE curve; classification, error rate.
        "aurc": {m: aurc(u, s.loss, root=root) for m, u in s.uncertainty.items()},
        "referral": {m: referral_table(s, m) for m in s.uncertainty},
    }


def operating_point(s: Scored, metric: str, threshold: float) -> dict[str, float]:
    """What the manifest's threshold does on these rows (MC dropout)."""
    u = s.uncertainty[metric]
    kept = np.isfinite(u) & (u <= threshold)
    n_kept = int(kept.sum())
    out: dict[str, float] = {"metric_threshold": threshold, "coverage": n_kept / len(u)}
    out["referral_rate"] = 1.0 - out["coverage"]
    if n_kept:
        risk = float(np.mean(s.loss[kept]))
        if s.task == "regression":
            out["retained_rmse"] = float(np.sqrt(risk))
        else:
            out["retained_accuracy"] = 1.0 - risk
    return out


def markdown_table(mc: dict[str, Any], std: dict[str, Any], mc_metric: str, std_metric: str) -> str:
    """Referral rate against retained accuracy/RMSE, MC dropout beside standard dropout."""
    a, b = mc["referral"][mc_metric], std["referral"][std_metric]
    key = next(k for k in a[0] if k.startswith("retained_"))
    lines = [
        f"| referred | MC dropout ({mc_metric}) | standard dropout ({std_metric}) |",
        "|---:|---:|---:|",
    ]
    for ra, rb in zip(a, b, strict=True):
        lines.append(f"| {ra['referral_rate']:.0%} | {ra[key]:.4f} | {rb[key]:.4f} |")
    return "\n".join(lines)

"""`mcdrop evaluate --ood` and `mcdrop evaluate --shift`: uncertainty off the training distribution.

--ood: each measure's AUROC and AUPR for telling the OOD rows from the in-distribution test rows,
and the share of OOD rows the calibrated threshold refers. --shift: MC dropout beside standard
dropout on the test rows shifted at increasing intensity (accuracy, NLL, ECE, AURC, referral
rate at the calibrated threshold). Both write JSON and a PNG to the report folder.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.artifacts.data import Dataset, read_dataset
from service.evaluation import summary
from service.evaluation.heldout import Scored, score_mc, score_standard
from service.maths import ood
from service.maths.selective import aurc
from service.maths.shift import DEFAULT_INTENSITIES, UNITS, shifted
from service.serving.model import MCDropoutModel


def subsample(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded random subset of at most `limit` rows (all rows when limit is None)."""
    if limit is None or limit >= len(ds.x):
        return ds
    pick = np.sort(np.random.default_rng(seed).permutation(len(ds.x))[:limit])
    return Dataset(ds.x[pick], np.asarray(ds.y)[pick])


def _header(
    model: MCDropoutModel, args: argparse.Namespace, n: int, samples: int
) -> dict[str, Any]:
    return {
        "model": model.manifest.name,
        "version": model.manifest.version,
        "data": Path(args.data).name,
        "n": n,
        "limit": args.limit,
        "samples": samples,
        "seed": args.seed,
        "metric": model.manifest.uncertainty_metric,
        "threshold": model.manifest.threshold,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def run_ood(model: MCDropoutModel, args: argparse.Namespace, samples: int, out: Path) -> int:
    from service.evaluation.shift_plots import ood_histograms

    m = model.manifest
    ds = subsample(read_dataset(args.data, args.target_col), args.limit, args.seed)
    scored_in = score_mc(model, ds, samples, args.seed)
    report = _header(model, args, len(ds.x), samples)
    report["in_distribution_referral_rate"] = ood.referral_rate(
        scored_in.uncertainty[m.uncertainty_metric], m.threshold
    )
    report["ood"] = {}
    ood_scores: dict[str, dict[str, NDArray[np.float64]]] = {}
    for path in args.ood:
        name = Path(path).stem
        ood_rows = subsample(read_dataset(path), args.limit, args.seed)
        s = score_mc(model, ood_rows, samples, args.seed)
        ood_scores[name] = s.uncertainty
        report["ood"][name] = {
            "n": len(ood_rows.x),
            "referral_rate": ood.referral_rate(s.uncertainty[m.uncertainty_metric], m.threshold),
            **{k: ood.separation(scored_in.uncertainty[k], u) for k, u in s.uncertainty.items()},
        }
    (out / "ood.json").write_text(json.dumps(report, indent=2) + "\n")
    ood_histograms(
        scored_in.uncertainty, ood_scores, {m.uncertainty_metric: m.threshold}, out / "ood.png"
    )
    metrics = list(scored_in.uncertainty)
    print(
        f"{m.name}: in-distribution {Path(args.data).name} n={len(ds.x)}, T={samples}; "
        f"referral rate at {m.uncertainty_metric} > {m.threshold:.4g}: in-distribution "
        f"{report['in_distribution_referral_rate']:.3f}"
    )
    print(
        "| OOD set | n | " + " | ".join(f"{k} AUROC / AUPR" for k in metrics) + " | referral rate |"
    )
    print("|---|---:|" + "---:|" * (len(metrics) + 1))
    for name, r in report["ood"].items():
        cells = " | ".join(f"{r[k]['auroc']:.3f} / {r[k]['aupr']:.3f}" for k in metrics)
        print(f"| {name} | {r['n']} | {cells} | {r['referral_rate']:.3f} |")
    print(f"wrote {out}/ood.json and ood.png")
    return 0


def _figures(s: Scored, y: NDArray[np.float64], metric: str, threshold: float) -> dict[str, Any]:
    head = summary.headline(s, y, None)
    u = s.uncertainty.get(metric)
    return {
        **head,
        "aurc": aurc(u, s.loss) if u is not None else None,
        "referral_rate": ood.referral_rate(u, threshold) if u is not None else None,
    }


def run_shift(model: MCDropoutModel, args: argparse.Namespace, samples: int, out: Path) -> int:
    from service.evaluation.shift_plots import shift_curves

    m = model.manifest
    if model.task != "classification" or len(m.input_shape) != 3:
        raise ValueError("--shift: needs an image classifier (input_shape channels, height, width)")
    ds = subsample(read_dataset(args.data, args.target_col), args.limit, args.seed)
    images = ds.x.reshape(len(ds.x), *m.input_shape)
    pixel_range = 1.0 / m.normalization.input_scale
    y = np.asarray(ds.y, np.float64).reshape(-1)
    intensities = args.intensities or DEFAULT_INTENSITIES[args.shift]
    # Standard dropout has no calibrated threshold of its own: it is read at MC dropout's
    # threshold when both share the measure (predictive entropy), else not reported.
    std_metric = m.uncertainty_metric if m.uncertainty_metric == "predictive_entropy" else ""
    report = _header(model, args, len(y), samples)
    report.update(shift=args.shift, unit=UNITS[args.shift], intensities=[])
    print(f"| {UNITS[args.shift]} | method | accuracy | NLL | ECE | AURC | referral rate |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for level in intensities:
        rng = np.random.default_rng(args.seed)
        x = shifted(images, args.shift, float(level), pixel_range, rng)
        sds = Dataset(x.reshape(len(x), -1), ds.y)
        step: dict[str, Any] = {
            "intensity": float(level),
            "mc_dropout": _figures(
                score_mc(model, sds, samples, args.seed), y, m.uncertainty_metric, m.threshold
            ),
            "standard_dropout": _figures(score_standard(model, sds), y, std_metric, m.threshold),
        }
        report["intensities"].append(step)
        for method in ("mc_dropout", "standard_dropout"):
            f = step[method]
            cells = [
                f"{f[k]:.4f}" if f[k] is not None else "–"
                for k in ("accuracy", "nll", "ece", "aurc", "referral_rate")
            ]
            print(f"| {level:g} | {method.replace('_', ' ')} | " + " | ".join(cells) + " |")
    name = f"shift_{args.shift}"
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    shift_curves(report, out / f"{name}.png")
    print(f"wrote {out}/{name}.json and {name}.png")
    return 0

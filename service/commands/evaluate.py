"""`mcdrop evaluate`: MC dropout against standard dropout on labelled test data.

Writes report.json and three PNGs (risk-coverage, reliability, uncertainty histograms) to --out,
and prints the headline figures and the referral table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from service.evaluation.heldout import Scored
    from service.serving.model import MCDropoutModel

    FloatArray = NDArray[np.float64]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate", help="accuracy, calibration and referral curves, MC vs standard dropout"
    )
    p.add_argument("model", help="model folder, or the name of one under models/")
    p.add_argument("--data", required=True, help="labelled test data: .csv, .npz or idx")
    p.add_argument("--target", dest="target_col", help="CSV target column name")
    p.add_argument("--out", help="report folder (default: build/evaluate/MODEL_NAME)")
    p.add_argument("--samples", type=int, help="MC passes T (default: the manifest's)")
    p.add_argument("--seed", type=int, default=0, help="MC seed (and the subsample's)")
    p.add_argument(
        "--ood",
        action="append",
        metavar="DATA",
        help="out-of-distribution set (repeatable): AUROC/AUPR of each uncertainty measure "
        "against --data, and its referral rate at the calibrated threshold",
    )
    p.add_argument(
        "--shift",
        choices=("rotate", "noise"),
        help="shift --data's images at increasing intensity: MC beside standard dropout",
    )
    p.add_argument(
        "--intensities",
        type=float,
        nargs="+",
        help="shift intensities (rotate: degrees; noise: std / pixel range)",
    )
    p.add_argument("--limit", type=int, help="use a seeded random subset of this many rows")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.evaluation.heldout import resolve_model_dir
    from service.serving.model import load_model

    folder = resolve_model_dir(args.model)
    model = load_model(folder, device="cpu")
    out = Path(args.out or Path("build/evaluate") / model.manifest.name)
    out.mkdir(parents=True, exist_ok=True)
    samples = model.resolve_samples(args.samples)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit: expected a positive number of rows, got {args.limit}")
    if args.ood or args.shift:
        from service.commands.evaluate_shift import run_ood, run_shift

        if args.ood and run_ood(model, args, samples, out):
            return 1
        return run_shift(model, args, samples, out) if args.shift else 0
    return _evaluate_heldout(args, model, folder, samples, out)


def _evaluate_heldout(
    args: argparse.Namespace, model: MCDropoutModel, folder: Path, samples: int, out: Path
) -> int:
    import numpy as np

    from service.artifacts.data import read_dataset
    from service.commands.evaluate_shift import subsample
    from service.evaluation import summary
    from service.evaluation.heldout import score_mc, score_standard

    ds = subsample(read_dataset(args.data, args.target_col), args.limit, args.seed)
    mc = score_mc(model, ds, samples, args.seed)
    std = score_standard(model, ds)
    y = np.asarray(ds.y, np.float64)
    y = y.reshape(-1) if model.task == "classification" else y.reshape(len(y), -1)
    m = model.manifest
    mc_report = summary.method_report(mc, y, m.tau)
    std_report = summary.method_report(std, y, m.tau)
    report = _report(args, model, samples, len(y), mc_report, std_report)
    report["operating_point"].update(summary.operating_point(mc, m.uncertainty_metric, m.threshold))
    _write_report_and_figures(report, folder, out, mc, std, y, m.tau)
    _print_summary(report, model, args, samples)
    print(f"wrote {out}/report.json and {len(report['plots'])} PNGs", file=sys.stderr)
    return 0


def _report(
    args: argparse.Namespace,
    model: MCDropoutModel,
    samples: int,
    n: int,
    mc_report: dict[str, Any],
    std_report: dict[str, Any],
) -> dict[str, Any]:
    from service.evaluation.heldout import data_fingerprint

    m = model.manifest
    return {
        "model": m.name,
        "task": model.task,
        **data_fingerprint(args.data),
        "n": n,
        "samples": samples,
        "seed": args.seed,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mc_dropout": mc_report,
        "standard_dropout": std_report,
        "standard_dropout_uncertainty": (
            "from the single softmax of the weight-scaled pass: predictive_entropy = its "
            "entropy, least_confidence = 1 - its max probability"
            if model.task == "classification"
            else "none per row: its predictive variance is the constant 1/tau"
        ),
        "operating_point": {
            "metric": m.uncertainty_metric,
            "calibrated": m.calibration is not None,
            "calibration": m.calibration,
        },
        "plots": [
            "risk_coverage.png",
            "reliability.png",
            "uncertainty_mc.png",
            "uncertainty_standard.png",
        ],
    }


def _write_report_and_figures(
    report: dict[str, Any],
    folder: Path,
    out: Path,
    mc: Scored,
    std: Scored,
    y: FloatArray,
    tau: float | None,
) -> None:
    from service.evaluation import plots

    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    plots.risk_coverage_plot([mc, std], out / "risk_coverage.png")
    plots.reliability_plot([mc, std], y, out / "reliability.png", tau)
    plots.uncertainty_histograms(mc, out / "uncertainty_mc.png")
    plots.uncertainty_histograms(std, out / "uncertainty_standard.png")
    tuning = folder / "tuning.json"  # written by `mcdrop tune`: its search goes in the figures
    if tuning.is_file():
        plots.tuning_plot(json.loads(tuning.read_text()), out / "tuning.png")
        report["plots"].append("tuning.png")
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def _print_summary(
    report: dict[str, Any], model: MCDropoutModel, args: argparse.Namespace, samples: int
) -> None:
    from service.evaluation import summary

    m = model.manifest
    mc_report, std_report = report["mc_dropout"], report["standard_dropout"]
    std_metric = "predictive_entropy" if model.task == "classification" else "constant"
    keys = [k for k in mc_report if isinstance(mc_report[k], float)]
    print(f"{m.name} on {Path(args.data).name}: n={report['n']}, MC T={samples}, seed={args.seed}")
    print("| figure | MC dropout | standard dropout |\n|---|---:|---:|")
    for k in keys:
        print(f"| {k} | {mc_report[k]:.4f} | {std_report[k]:.4f} |")
    print("\nAURC (lower is better):")
    for name, rep in (("MC", mc_report), ("standard", std_report)):
        print("  " + name + ": " + ", ".join(f"{k} {v:.5f}" for k, v in rep["aurc"].items()))
    print()
    print(summary.markdown_table(mc_report, std_report, m.uncertainty_metric, std_metric))
    op = {k: v for k, v in report["operating_point"].items() if k != "calibration"}
    print(f"\noperating point ({m.uncertainty_metric} > {m.threshold:.6g}): {json.dumps(op)}")

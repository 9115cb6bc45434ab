"""`mcdrop calibrate`: set a model's abstain threshold from labelled held-out data.

See service/maths/calibration.py for the method and why the guarantee holds. The manifest is only
rewritten (atomically) when a threshold meets the target; otherwise nothing is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from service.artifacts.data import Dataset
    from service.evaluation.thresholds import Calibrated, Goal, Selection
    from service.maths.calibration import OperatingPoint
    from service.serving.model import MCDropoutModel

    FloatArray = NDArray[np.float64]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "calibrate", help="choose the abstain threshold from held-out data, with a guarantee"
    )
    p.add_argument("model", help="model folder, or the name of one under models/")
    p.add_argument("--data", help="labelled held-out data: .csv, .npz or idx")
    p.add_argument(
        "--from-referrals",
        action="store_true",
        help="add the referrals people resolved (MCDROP_DATABASE_URL's store) to the held-out "
        "set, and report the model's accuracy on them",
    )
    p.add_argument(
        "--database-url", help="referral store (default: MCDROP_DATABASE_URL or its default)"
    )
    p.add_argument("--target", dest="target_col", help="CSV target column name")
    goal = p.add_mutually_exclusive_group(required=True)
    goal.add_argument("--max-referral-rate", type=float, help="refer at most this fraction")
    goal.add_argument("--target-error", type=float, help="classification: retained error <= e")
    goal.add_argument("--target-rmse", type=float, help="regression: retained RMSE <= v")
    goal.add_argument(
        "--reference-only",
        action="store_true",
        help="keep the threshold; only store the held-out scores the calibration watch needs "
        "(for a model calibrated before the watch existed)",
    )
    p.add_argument("--delta", type=float, default=0.05, help="1 - confidence of the guarantee")
    p.add_argument(
        "--metric", help="uncertainty measure (default: compare all, keep the lowest AURC)"
    )
    p.add_argument(
        "--error-bound",
        type=float,
        help="regression: |error| assumed <= this (default 4 x the training target std)",
    )
    p.add_argument("--samples", type=int, help="MC passes T (default: the manifest's)")
    p.add_argument("--seed", type=int, default=0, help="MC seed and selection/test split seed")
    p.add_argument("--dry-run", action="store_true", help="report, but leave the manifest alone")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.evaluation.heldout import resolve_model_dir, score_mc
    from service.evaluation.thresholds import choose_metric, operating_point
    from service.maths.calibration import TargetUnreachable
    from service.serving.model import load_model, metrics_for

    folder = resolve_model_dir(args.model)
    model = load_model(folder, device="cpu")
    metrics = metrics_for(model.task)
    _check_arguments(args, model.task, metrics)
    samples = model.resolve_samples(args.samples)
    ds, fingerprint = _heldout(args, model, folder.name, samples)
    scored = score_mc(model, ds, samples, args.seed)
    if args.reference_only:
        return _reference_only(folder, model, scored.uncertainty, samples, args.dry_run)
    goal = _goal(args, model)
    selection = choose_metric(scored, metrics, args.metric, goal, args.seed)
    try:
        calibrated = operating_point(goal, scored, selection)
    except TargetUnreachable as e:
        print(f"mcdrop calibrate: target not met, nothing written: {e}", file=sys.stderr)
        return 1
    n = len(scored.loss)
    record = _record(args, calibrated, selection, model.task, n, fingerprint, samples)
    print(json.dumps(record, indent=2))
    if args.dry_run:
        print("dry run: manifest left unchanged", file=sys.stderr)
        return 0
    _write(folder, model, scored.uncertainty[selection.metric], calibrated.op, record, samples)
    return 0


def _goal(args: argparse.Namespace, model: MCDropoutModel) -> Goal:
    from service.evaluation.thresholds import Goal

    bound = None
    if args.target_rmse is not None:
        # Default: 4 x the training target's standard deviation.
        bound = args.error_bound or 4.0 * float(max(model.manifest.normalization.y_std or [1]))
    return Goal(args.max_referral_rate, args.target_error, args.target_rmse, args.delta, bound)


def _check_arguments(args: argparse.Namespace, task: str, metrics: Sequence[str]) -> None:
    if args.target_error is not None and task != "classification":
        raise ValueError("--target-error is for classifiers; use --target-rmse for regression")
    if args.target_rmse is not None and task != "regression":
        raise ValueError("--target-rmse is for regression; use --target-error for classifiers")
    if args.metric is not None and args.metric not in metrics:
        raise ValueError(f"--metric: expected one of {list(metrics)}, got '{args.metric}'")
    if args.data is None and not args.from_referrals:
        raise ValueError("give --data HELDOUT, --from-referrals, or both")


def _heldout(
    args: argparse.Namespace, model: MCDropoutModel, name: str, samples: int
) -> tuple[Dataset, dict[str, Any]]:
    """The held-out rows (a file, the resolved referrals, or both) and what identifies them."""
    from service.artifacts.data import read_dataset
    from service.evaluation.heldout import (
        array_sha256,
        concat_datasets,
        data_fingerprint,
        referral_heldout,
        report_on_referrals,
    )

    parts = [read_dataset(args.data, args.target_col)] if args.data else []
    fingerprint: dict[str, Any] = dict(data_fingerprint(args.data)) if args.data else {}
    if args.from_referrals:
        referred = referral_heldout(name, args.database_url)
        report_on_referrals(model, referred, samples, args.seed)
        parts.append(referred)
        fingerprint["referrals"] = len(referred.y)
        fingerprint["referrals_sha256"] = array_sha256(referred.x, referred.y)
    return (parts[0] if len(parts) == 1 else concat_datasets(parts)), fingerprint


def _record(
    args: argparse.Namespace,
    outcome: Calibrated,
    split: Selection,
    task: str,
    n: int,
    fingerprint: dict[str, Any],
    samples: int,
) -> dict[str, Any]:
    """The manifest's `calibration` entry: the method, the operating point and its data."""
    regression = task == "regression"
    op = outcome.op
    return {
        "method": outcome.method,
        "metric": split.metric,
        "threshold": op.threshold,
        **outcome.target,
        "delta": args.delta,
        "coverage": op.coverage,
        "referral_rate": 1.0 - op.coverage,
        ("retained_rmse" if regression else "retained_error"): outcome.risk,
        ("retained_rmse_upper_bound" if regression else "retained_error_upper_bound"): (
            outcome.risk_bound
        ),
        "referral_rate_upper_bound": (
            op.risk_upper_bound if args.max_referral_rate is not None else None
        ),
        "n": n,
        "n_select": len(split.sel),
        "n_test": len(split.test),
        **fingerprint,
        "samples": samples,
        "seed": args.seed,
        "aurc_on_selection": split.aurcs or None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _write(
    folder: Path,
    model: MCDropoutModel,
    u: FloatArray,
    op: OperatingPoint,
    record: dict[str, Any],
    samples: int,
) -> None:
    import numpy as np

    from service.artifacts.manifest import write_manifest
    from service.artifacts.reference import save_reference

    metric = record["metric"]
    manifest = model.manifest.model_copy(deep=True)
    # The held-out scores go beside the weights, hashed in the manifest, for the live watch;
    # its referral rate is over every held-out row, the same rows the watch ranks against.
    finite = u[np.isfinite(u)]
    manifest.reference = save_reference(
        folder,
        u,
        metric,
        op.threshold,
        samples,
        referral_rate=float(np.mean(finite > op.threshold)) if len(finite) else 0.0,
        calibrated_at=record["date"],
    )
    manifest.uncertainty_metric = metric
    manifest.threshold = op.threshold
    manifest.calibration = record
    manifest.training["threshold_source"] = "mcdrop calibrate: see calibration"
    write_manifest(folder, manifest)
    print(
        f"wrote {folder}/model.json: {metric} > {op.threshold:.6g} abstains, and "
        f"{len(finite)} reference scores",
        file=sys.stderr,
    )


def _reference_only(
    folder: Any, model: Any, uncertainty: dict[str, Any], samples: int, dry_run: bool
) -> int:
    """Store the held-out scores of the manifest's metric; the threshold stays as it is."""
    import numpy as np

    from service.artifacts.manifest import write_manifest
    from service.artifacts.reference import save_reference

    m = model.manifest
    if m.calibration is None:
        raise ValueError("--reference-only: this model was never calibrated; give a target")
    u = uncertainty[m.uncertainty_metric]
    finite = u[np.isfinite(u)]
    rate = float(np.mean(finite > m.threshold)) if len(finite) else 0.0
    print(
        f"{len(finite)} reference scores of {m.uncertainty_metric}; {rate:.4f} of them are "
        f"over the threshold {m.threshold:.6g}"
    )
    if dry_run:
        print("dry run: nothing written", file=sys.stderr)
        return 0
    manifest = m.model_copy(deep=True)
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    manifest.reference = save_reference(
        folder, u, m.uncertainty_metric, m.threshold, samples, rate, calibrated_at=date
    )
    write_manifest(folder, manifest)
    print(f"wrote {folder}/reference.safetensors and its hash in model.json", file=sys.stderr)
    return 0

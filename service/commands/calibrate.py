"""`mcdrop calibrate`: set a model's abstain threshold from labelled held-out data.

See service/maths/calibration.py for the method and why the guarantee holds. The manifest is only
rewritten (atomically) when a threshold meets the target; otherwise nothing is written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

SELECT_FRACTION = 0.2


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
    import numpy as np

    from service.artifacts.data import read_dataset
    from service.artifacts.manifest import write_manifest
    from service.artifacts.reference import save_reference
    from service.evaluation.heldout import (
        array_sha256,
        concat_datasets,
        data_fingerprint,
        referral_heldout,
        report_on_referrals,
        resolve_model_dir,
        score_mc,
    )
    from service.maths import calibration
    from service.maths.selective import aurc
    from service.serving.model import load_model, metrics_for

    folder = resolve_model_dir(args.model)
    model = load_model(folder, device="cpu")
    task = model.task
    if args.target_error is not None and task != "classification":
        raise ValueError("--target-error is for classifiers; use --target-rmse for regression")
    if args.target_rmse is not None and task != "regression":
        raise ValueError("--target-rmse is for regression; use --target-error for classifiers")
    metrics = metrics_for(task)
    if args.metric is not None and args.metric not in metrics:
        raise ValueError(f"--metric: expected one of {list(metrics)}, got '{args.metric}'")

    if args.data is None and not args.from_referrals:
        raise ValueError("give --data HELDOUT, --from-referrals, or both")
    samples = model.resolve_samples(args.samples)
    parts = [read_dataset(args.data, args.target_col)] if args.data else []
    fingerprint: dict[str, Any] = dict(data_fingerprint(args.data)) if args.data else {}
    if args.from_referrals:
        referred = referral_heldout(folder.name, args.database_url)
        report_on_referrals(model, referred, samples, args.seed)
        parts.append(referred)
        fingerprint["referrals"] = len(referred.y)
        fingerprint["referrals_sha256"] = array_sha256(referred.x, referred.y)
    ds = parts[0] if len(parts) == 1 else concat_datasets(parts)
    scored = score_mc(model, ds, samples, args.seed)
    if args.reference_only:
        return _reference_only(folder, model, scored.uncertainty, samples, args.dry_run)
    n = len(scored.loss)
    regression = task == "regression"
    # Metric choice and candidate thresholds look at the selection part only (see calibration.py).
    needs_split = args.max_referral_rate is None or args.metric is None
    sel, test = (
        calibration.select_test_split(n, SELECT_FRACTION, args.seed)
        if needs_split
        else (np.zeros(0, np.intp), np.arange(n))
    )
    aurcs = {
        m: aurc(scored.uncertainty[m][sel], scored.loss[sel], root=regression)
        for m in metrics
        if len(sel)
    }
    metric = args.metric or min(aurcs, key=lambda m: aurcs[m])
    u = scored.uncertainty[metric]

    target: dict[str, float]
    try:
        if args.max_referral_rate is not None:
            target = {"max_referral_rate": args.max_referral_rate}
            op = calibration.calibrate_referral(u[test], args.max_referral_rate, args.delta)
            method = "order statistic with a Beta(n - j + 1, j) bound on the referral rate"
            kept_loss = float(np.mean(scored.loss[test][u[test] <= op.threshold]))
            risk = float(np.sqrt(kept_loss)) if regression else kept_loss
            risk_bound = None
        elif not regression:
            target = {"target_error": args.target_error}
            goal = f"retained error rate <= {args.target_error:g}"
            op = calibration.calibrate_risk(
                u, scored.loss, args.target_error, args.delta, True, (sel, test), goal
            )
            method = "learn-then-test, fixed-sequence, binomial (Clopper-Pearson) p-values"
            risk, risk_bound = op.risk, op.risk_upper_bound
        else:
            target = {"target_rmse": args.target_rmse}
            bound = args.error_bound or 4.0 * float(max(model.manifest.normalization.y_std or [1]))
            scale = bound**2
            loss01 = np.minimum(scored.loss, scale) / scale
            alpha = args.target_rmse**2 / scale
            if alpha >= 1.0:
                raise ValueError("--target-rmse must be below --error-bound")
            goal = f"retained RMSE <= {args.target_rmse:g} (errors clipped at {bound:.4g})"
            op = calibration.calibrate_risk(u, loss01, alpha, args.delta, False, (sel, test), goal)
            method = (
                "learn-then-test, fixed-sequence, "
                "Hoeffding-Bentkus p-values on clipped squared error"
            )
            risk, risk_bound = (
                float(np.sqrt(op.risk * scale)),
                float(np.sqrt(op.risk_upper_bound * scale)),
            )
            target["error_bound"] = bound
            target["rows_over_error_bound"] = int(np.sum(scored.loss > scale))
    except calibration.TargetUnreachable as e:
        print(f"mcdrop calibrate: target not met, nothing written: {e}", file=sys.stderr)
        return 1

    record = {
        "method": method,
        "metric": metric,
        "threshold": op.threshold,
        **target,
        "delta": args.delta,
        "coverage": op.coverage,
        "referral_rate": 1.0 - op.coverage,
        ("retained_rmse" if regression else "retained_error"): risk,
        ("retained_rmse_upper_bound" if regression else "retained_error_upper_bound"): risk_bound,
        "referral_rate_upper_bound": (
            op.risk_upper_bound if args.max_referral_rate is not None else None
        ),
        "n": n,
        "n_select": len(sel),
        "n_test": len(test),
        **fingerprint,
        "samples": samples,
        "seed": args.seed,
        "aurc_on_selection": aurcs or None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(record, indent=2))
    if args.dry_run:
        print("dry run: manifest left unchanged", file=sys.stderr)
        return 0
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
    return 0


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

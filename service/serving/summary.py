"""Row summaries in two steps, so a batch of requests is summarised together.

`summarize_rows` is the vectorised step over every row of a pass (target units, moments or
classification measures); it knows no metric, threshold or seed, so a batch's jobs can share it.
`job_result` is the cheap per-job step: slice the job's rows, pick its metric, apply its threshold
and seed, keep its samples if asked. Every reduction handles a row the same way whatever rows sit
beside it, so a job summarised inside a batch gets, bit for bit, the result it gets alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from service.maths import uncertainty
from service.serving.results import ClassificationResult, Prediction, RegressionResult

if TYPE_CHECKING:
    from service.serving.model import MCDropoutModel


@dataclass(frozen=True)
class SummarySpec:
    """A request's summary options; None means the model's default."""

    threshold: float | None = None
    metric: str | None = None
    return_samples: bool = False


@dataclass(frozen=True)
class RowSummary:
    """The metric- and threshold-free part of a summary, for rows [start, stop) of `values`."""

    samples: int  # T
    values: NDArray[np.float64]  # (T, N, D): target units (regression) or probabilities
    regression: uncertainty.RegressionMoments | None
    classification: uncertainty.ClassificationMeasures | None
    start: int = 0
    stop: int | None = None


def summarize_rows(model: MCDropoutModel, raw: NDArray[np.float32]) -> RowSummary:
    """The vectorised step over all N rows of the engine's (T, N, D) outputs."""
    if model.task == "regression":
        ys = model.to_target_units(raw)
        assert model.manifest.tau is not None  # guaranteed for regression manifests
        return RowSummary(
            raw.shape[0], ys, uncertainty.regression_moments(ys, model.manifest.tau), None
        )
    probs = uncertainty.softmax(raw, axis=2)
    return RowSummary(raw.shape[0], probs, None, uncertainty.classification_measures(probs))


def job_result(model: MCDropoutModel, rows: RowSummary, seed: int, spec: SummarySpec) -> Prediction:
    """The per-job step: the prediction for rows [start, stop) with the job's own options."""
    m = model.resolve_metric(spec.metric)
    thr = model.manifest.threshold if spec.threshold is None else float(spec.threshold)
    part = slice(rows.start, rows.stop)
    kept = rows.values[:, part].astype(np.float32) if spec.return_samples else None
    if rows.regression is not None:
        mom = rows.regression
        std = mom.std[part]
        values = {
            "std": std,
            "variance": mom.variance[part],
            "epistemic_std": np.sqrt(mom.epistemic_variance[part]),
        }
        # With several outputs the row is as uncertain as its most uncertain output.
        unc = values[m].max(axis=1)
        return RegressionResult(
            samples=rows.samples,
            seed=seed,
            metric=m,
            threshold=thr,
            mean=mom.mean[part],
            variance=mom.variance[part],
            uncertainty=unc,
            abstain=_abstain(unc, thr),
            raw_samples=kept,
            std=std,
            epistemic_variance=mom.epistemic_variance[part],
            aleatoric_variance=mom.aleatoric_variance[part],
        )
    cm = rows.classification
    assert cm is not None
    unc = getattr(cm, m)[part]
    return ClassificationResult(
        samples=rows.samples,
        seed=seed,
        metric=m,
        threshold=thr,
        mean=cm.probabilities[part],
        variance=cm.variance[part],
        uncertainty=unc,
        abstain=_abstain(unc, thr),
        raw_samples=kept,
        probabilities=cm.probabilities[part],
        label=cm.label[part],
        predictive_entropy=cm.predictive_entropy[part],
        mutual_information=cm.mutual_information[part],
        variation_ratio=cm.variation_ratio[part],
    )


def summarize_many(
    model: MCDropoutModel,
    raws: Sequence[NDArray[np.float32]],
    seeds: Sequence[int],
    specs: Sequence[SummarySpec],
) -> list[Prediction | BaseException]:
    """Each job's prediction, the rows of jobs with the same T and output shape summarised in
    one vectorised step; a job whose options fail fails alone."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, raw in enumerate(raws):
        key = (raw.shape[0], *raw.shape[2:])
        groups.setdefault(key, []).append(i)
    out: dict[int, Prediction | BaseException] = {}
    for members in groups.values():
        stacked = [raws[i] for i in members]
        rows = _guarded_rows(model, stacked[0] if len(stacked) == 1 else np.concatenate(stacked, 1))
        if isinstance(rows, BaseException) and len(members) > 1:
            # Summarise each job alone, so a job that breaks the shared step fails only itself.
            for i in members:
                out[i] = summarize_many(model, [raws[i]], [seeds[i]], [specs[i]])[0]
            continue
        start = 0
        for i in members:
            stop = start + raws[i].shape[1]
            out[i] = _guarded_result(model, rows, start, stop, seeds[i], specs[i])
            start = stop
    return [out[i] for i in range(len(raws))]


def _guarded_rows(model: MCDropoutModel, raw: NDArray[np.float32]) -> RowSummary | BaseException:
    # Samples that overflowed make numpy warn (inf - inf); abstain_non_finite answers those rows.
    try:
        with np.errstate(all="ignore"):
            return summarize_rows(model, raw)
    except Exception as e:
        return e


def _guarded_result(
    model: MCDropoutModel,
    rows: RowSummary | BaseException,
    start: int,
    stop: int,
    seed: int,
    spec: SummarySpec,
) -> Prediction | BaseException:
    if isinstance(rows, BaseException):
        return rows
    part = RowSummary(rows.samples, rows.values, rows.regression, rows.classification, start, stop)
    try:
        with np.errstate(all="ignore"):
            return job_result(model, part, seed, spec)
    except Exception as e:
        return e


def _abstain(unc: NDArray[np.float64], threshold: float) -> NDArray[np.bool_]:
    # A non-finite uncertainty is never trusted: refer the item.
    out: NDArray[np.bool_] = ~np.isfinite(unc) | (unc > threshold)
    return out


__all__ = ["RowSummary", "SummarySpec", "job_result", "summarize_many", "summarize_rows"]

"""The answer of the predict routes: one object per row, built from a typed result."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from service.serving.predictor import Inference
from service.serving.results import Prediction, RegressionResult


def _absent(value: Any) -> bool:
    return value is None


class PredictionBase(BaseModel):
    """What every row's answer has."""

    mean: list[float] = Field(
        description="Predictive mean per output (regression, target units) or the mean "
        "probability per class (classification)."
    )
    variance: list[float] = Field(
        description="Total predictive variance per output (regression) or the variance of each "
        "class probability across samples (classification)."
    )
    uncertainty: float = Field(description="The value compared with the threshold.")
    abstain: bool = Field(
        description="True when the uncertainty is above the threshold: refer the item."
    )
    # Only with samples "auto" (left out of the JSON otherwise).
    samples_used: int | None = Field(
        default=None, exclude_if=_absent, description='samples "auto": the T this row used.'
    )
    mean_se: list[float] | None = Field(
        default=None,
        exclude_if=_absent,
        description='samples "auto": MC standard error of each mean value.',
    )
    uncertainty_se: float | None = Field(
        default=None,
        exclude_if=_absent,
        description='samples "auto": MC standard error of the uncertainty.',
    )
    decision_settled: bool | None = Field(
        default=None,
        exclude_if=_absent,
        description='samples "auto": true when the row stopped early because the confidence '
        "interval of its uncertainty cleared the threshold; false when it ran to max_samples.",
    )
    referral_id: str | None = Field(
        default=None,
        description="Id of this row in the referral queue (GET /v1/referrals/{id}) when it "
        "abstained and was recorded; null otherwise.",
    )
    reason: str | None = Field(
        default=None,
        description="Set when the row abstains whatever the threshold, e.g. its outputs "
        "overflowed; its numbers are then placeholders (0). Null otherwise.",
    )


class RegressionPrediction(PredictionBase):
    """One row's answer from a regression model, in the target's original units."""

    std: list[float] = Field(description="Square root of the total variance, per output.")
    epistemic_variance: list[float] = Field(
        description="Model uncertainty: the variance of the T sampled outputs."
    )
    aleatoric_variance: list[float] = Field(description="Observation noise: 1/τ.")


class ClassificationPrediction(PredictionBase):
    """One row's answer from a classifier."""

    probabilities: list[float] = Field(description="Mean softmax over the T samples.")
    label: int = Field(description="Index of the most probable class.")
    class_label: str | None = Field(
        default=None, description="Name of that class, when the model has class labels."
    )
    predictive_entropy: float = Field(description="Entropy of the mean probabilities, in nats.")
    mutual_information: float = Field(
        description="BALD: predictive entropy minus the mean entropy of each sample."
    )
    variation_ratio: float = Field(
        description="1 minus the share of samples that voted for the modal class."
    )


class PredictResponse(BaseModel):
    """Predictions for every input row, in input order, with what is needed to reproduce them."""

    model: str = Field(description="Name of the model that answered.")
    version: str = Field(description="That model's version.")
    task: Literal["regression", "classification"] = Field(description="The model's task.")
    samples: int = Field(
        description='T, the number of stochastic passes used (samples "auto": the largest '
        "samples_used of any row)."
    )
    seed: int = Field(description="Seed used; send it back to reproduce this answer.")
    threshold: float = Field(description="Abstain threshold used.")
    uncertainty_metric: str = Field(description="Uncertainty compared with the threshold.")
    request_id: str = Field(description="This request's id (also in the X-Request-ID header).")
    predictions: list[RegressionPrediction] | list[ClassificationPrediction] = Field(
        description="One answer per input row, in input order."
    )
    raw_samples: list[list[list[float]]] | None = Field(
        default=None,
        description="The T×N×D samples, only when return_samples was true.",
    )


# Every row of a batch validated in one call into pydantic's core, not one call per row.
_REGRESSION_ROWS = TypeAdapter(list[RegressionPrediction])
_CLASSIFICATION_ROWS = TypeAdapter(list[ClassificationPrediction])


def to_response(out: Inference, request_id: str) -> PredictResponse:
    """A typed result → one object per row. `tolist()` converts whole arrays at C speed, and
    pydantic validates each row in Rust (model_construct would run in Python, slower here)."""
    result, manifest = out.result, out.model.manifest
    columns = _columns(result)
    rows: list[RegressionPrediction] | list[ClassificationPrediction]
    if isinstance(result, RegressionResult):
        columns["std"] = result.std.tolist()
        columns["epistemic_variance"] = result.epistemic_variance.tolist()
        columns["aleatoric_variance"] = result.aleatoric_variance.tolist()
        rows = _REGRESSION_ROWS.validate_python(_rows(columns))
    else:
        labels = result.label.tolist()
        names = manifest.class_labels
        columns["probabilities"] = result.probabilities.tolist()
        columns["label"] = labels
        columns["class_label"] = [names[k] for k in labels] if names else [None] * len(labels)
        columns["predictive_entropy"] = result.predictive_entropy.tolist()
        columns["mutual_information"] = result.mutual_information.tolist()
        columns["variation_ratio"] = result.variation_ratio.tolist()
        rows = _CLASSIFICATION_ROWS.validate_python(_rows(columns))
    return PredictResponse(
        model=out.name,
        version=manifest.version,
        task=result.task,
        samples=result.samples,
        seed=result.seed,
        threshold=result.threshold,
        uncertainty_metric=result.metric,
        request_id=request_id,
        predictions=rows,
        raw_samples=result.raw_samples.tolist() if result.raw_samples is not None else None,
    )


def _columns(result: Prediction) -> dict[str, list[Any]]:
    """What every row has, one list per field over the whole batch of rows."""
    n = result.rows
    columns: dict[str, list[Any]] = {
        "mean": result.mean.tolist(),
        "variance": result.variance.tolist(),
        "uncertainty": result.uncertainty.tolist(),
        "abstain": result.abstain.tolist(),
        "referral_id": result.referral_ids or [None] * n,
        "reason": result.reason or [None] * n,
    }
    if result.adaptive is not None:
        for name, value in result.adaptive.outputs().items():
            columns[name] = value.tolist()
    return columns


def _rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = tuple(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]

"""Request and response bodies, named by role. Every field carries a description for /docs.

Numbers are strict: booleans and strings where numbers belong are refused (JSON `true` is not 1),
and so are NaN, Infinity and overflowing literals such as 1e400 (Python's json module reads
those as nan/inf, so finiteness is checked here, not left to the parser).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from service.api.watch_schemas import CalibrationWatchPublic
from service.serving.model import MAX_SEED

FLAT_ROW_MESSAGE = "must be a list of rows; wrap a single row as [[...]]"

FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]

# Rows may be flat feature lists or nested arrays (a convnet's channels × height × width).
# Each depth gets its own strict validator, chosen by the first row's nesting, so an error
# points at the exact element (inputs.3.7) instead of listing every alternative of a union.
_MAX_ROW_DEPTH = 4
_ROW_ADAPTERS: list[TypeAdapter[Any]] = []
_row_type: Any = FiniteNumber
for _ in range(_MAX_ROW_DEPTH):
    _row_type = list[_row_type]
    _ROW_ADAPTERS.append(TypeAdapter(list[_row_type]))

_INPUTS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "array",
        "description": "One row: a flat list of the model's features, or a nested array "
        "matching its input_shape (see GET /v1/models/{name}).",
        "items": {"anyOf": [{"type": "number"}, {"type": "array"}]},
    },
}


def _int_or_auto(v: Any) -> int | Literal["auto"] | None:
    """samples: an integer (never a bool or a float) or the string "auto"."""
    if v is None or v == "auto" or (isinstance(v, int) and not isinstance(v, bool)):
        return v  # type: ignore[no-any-return]
    raise ValueError('expected an integer or "auto"')


def _absent(value: Any) -> bool:
    return value is None


ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")]


class PredictRequest(BaseModel):
    """Rows to predict, with optional overrides of the model's sampling and abstain settings."""

    model_config = ConfigDict(extra="forbid")

    inputs: Annotated[list[Any], WithJsonSchema(_INPUTS_SCHEMA)] = Field(
        min_length=1,
        description="N rows of finite numbers; each a flat feature list or a nested array "
        "matching the model's input_shape.",
    )
    samples: Annotated[
        int | Literal["auto"] | None,
        PlainValidator(_int_or_auto),
        WithJsonSchema({"anyOf": [{"type": "integer"}, {"const": "auto"}, {"type": "null"}]}),
    ] = Field(
        default=None,
        description="T, the number of stochastic forward passes (default: the model's "
        'default_samples; at most its max_samples), or "auto": sample in rounds and stop '
        "each row once its abstain decision is settled (see max_samples, confidence).",
    )
    max_samples: int | None = Field(
        default=None,
        strict=True,
        description='With samples "auto": the most samples a row may use (default: the '
        "model's default_samples).",
    )
    confidence: float | None = Field(
        default=None,
        gt=0.5,
        lt=1.0,
        description='With samples "auto": confidence that a row stopped early is on the '
        "right side of the threshold (default 0.99).",
    )
    seed: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=MAX_SEED,
        description="Seed of the dropout masks; the same seed gives the same answer. Drawn "
        "and echoed when omitted.",
    )
    threshold: FiniteNumber | None = Field(
        default=None,
        description="Abstain when the uncertainty is above this (default: the model's "
        "calibrated threshold).",
    )
    uncertainty_metric: str | None = Field(
        default=None,
        max_length=64,
        description="Which uncertainty is compared with the threshold. Regression: std, "
        "variance, epistemic_std; classification: predictive_entropy, mutual_information, "
        "variation_ratio (default: the model's).",
    )
    return_samples: bool = Field(
        default=False,
        strict=True,
        description="Also return the raw T×N×D samples (regression: target units; "
        "classification: softmax probabilities).",
    )
    refer: bool = Field(
        default=True,
        strict=True,
        description="Record rows with abstain true in the referral queue for a person to "
        "answer (their referral_id is returned); false opts this request out.",
    )

    @field_validator("max_samples", "confidence", "return_samples")
    @classmethod
    def _auto_options(cls, v: Any, info: ValidationInfo) -> Any:
        auto = info.data.get("samples") == "auto"
        if info.field_name == "return_samples":
            if v and auto:
                raise ValueError('not available with samples "auto"')
        elif v is not None and not auto:
            raise ValueError('applies only with samples "auto"')
        return v

    timeout_ms: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=3_600_000,
        description="Deadline of this request in milliseconds, queueing included; past it, "
        "504. Only lowers the server's MCDROP_REQUEST_TIMEOUT_S.",
    )

    @field_validator("inputs")
    @classmethod
    def _strict_numbers(cls, rows: list[Any]) -> list[Any]:
        if not any(isinstance(row, list) for row in rows):
            # One error for the one mistake, rather than one per value of the unwrapped row.
            raise PydanticCustomError("rows_expected", FLAT_ROW_MESSAGE)
        depth, first = 1, rows[0]
        while isinstance(first, list) and first and isinstance(first[0], list):
            depth, first = depth + 1, first[0]
        adapter = _ROW_ADAPTERS[min(depth, _MAX_ROW_DEPTH) - 1]
        validated: list[Any] = adapter.validate_python(rows)
        return validated


class DefaultPredictRequest(PredictRequest):
    """A prediction request sent to POST /predict, which may name its model."""

    model: ModelName | None = Field(
        default=None,
        description="Model to use (default: the server's default model).",
    )


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


class ModelPublic(BaseModel):
    """What a client needs to call a model, and whether it can."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="Name used in URLs and in the `model` field.")
    ready: bool = Field(description="True when the model is loaded and serving.")
    reason: str | None = Field(
        default=None, description="Why the model is not ready (null when it is)."
    )
    reload_error: str | None = Field(
        default=None,
        description="Why the last reload of this folder failed while the previous version "
        "kept serving (null when it did not fail).",
    )
    version: str | None = Field(default=None, description="Model version from its manifest.")
    task: Literal["regression", "classification"] | None = Field(
        default=None, description="regression or classification."
    )
    input_shape: list[int] | None = Field(
        default=None, description="Shape of one input row (flat rows of its product also work)."
    )
    feature_names: list[str] | None = Field(default=None, description="Input feature names.")
    input_range: list[float] | None = Field(
        default=None,
        description="[low, high] of raw input values when the model scales its inputs "
        "(0 to 1/input_scale, e.g. [0, 255] for 8-bit images); null when unknown.",
    )
    image_zero: Literal["black", "white"] | None = Field(
        default=None,
        description="How an image input's value 0 is drawn (the review page uses it).",
    )
    output_names: list[str] | None = Field(default=None, description="Regression output names.")
    class_labels: list[str] | None = Field(default=None, description="Classifier class names.")
    tau: float | None = Field(
        default=None, description="Model precision τ, target units (regression only)."
    )
    default_samples: int | None = Field(default=None, description="T used when none is sent.")
    max_samples: int | None = Field(
        default=None, description="Largest T accepted (the model's and the server's cap)."
    )
    uncertainty_metric: str | None = Field(
        default=None, description="Default uncertainty compared with the threshold."
    )
    uncertainty_metrics: list[str] | None = Field(
        default=None, description="Metrics a request may choose."
    )
    threshold: float | None = Field(default=None, description="Default abstain threshold.")
    calibrated: bool | None = Field(
        default=None,
        description="False while the threshold is the training placeholder.",
    )
    engine: str | None = Field(default=None, description="MC engine serving the model.")
    device: str | None = Field(default=None, description="Device the engine runs on.")
    calibration_watch: CalibrationWatchPublic | None = Field(
        default=None,
        description="Whether live traffic still looks like the calibration data, so the "
        "threshold's guarantee still holds (see docs/calibration-watch.md).",
    )


class ModelList(BaseModel):
    """Every model folder the server found, ready or not."""

    default_model: str | None = Field(description="Model POST /predict uses when none is named.")
    models: list[ModelPublic] = Field(description="One entry per model folder, by name.")


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["alive"] = Field(description="Always 'alive'.")


class Readiness(BaseModel):
    """Whether the server can take predictions, and each model's state."""

    status: Literal["ready", "not ready"] = Field(
        description="ready once loading finished and at least one model serves."
    )
    models: dict[str, bool] = Field(description="Model name → ready.")
    reason: str | None = Field(
        default=None,
        description="Why not ready (null when ready): still loading, shutting down, no model "
        "directory, a model's own folder given as the directory, or no model loaded.",
    )


class ReloadReport(BaseModel):
    """What a reload did, by model name."""

    loaded: list[str] = Field(description="New or changed folders now serving their new version.")
    unchanged: list[str] = Field(description="Folders whose files did not change.")
    failed: list[str] = Field(
        description="Folders that failed to load; a previous version, if any, keeps serving."
    )
    removed: list[str] = Field(description="Folders that are gone; no longer served.")


class ErrorDetail(BaseModel):
    """One problem, located."""

    loc: list[str | int] = Field(description='Where: field path, e.g. ["inputs", 3, 7].')
    msg: str = Field(description="What was expected.")
    type: str = Field(description="Machine-readable kind of problem.")


class ErrorResponse(BaseModel):
    """Every error response has this shape."""

    error: str = Field(description="What went wrong, in one sentence.")
    detail: list[ErrorDetail] = Field(description="Located problems, when there are any.")

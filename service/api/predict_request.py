"""The body of POST /predict and POST /v1/models/{name}/predict.

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

from service.api.schemas import FiniteNumber
from service.serving.model import MAX_SEED

FLAT_ROW_MESSAGE = "must be a list of rows; wrap a single row as [[...]]"


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

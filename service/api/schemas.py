"""Bodies of the model listing, health, reload and error responses. Every field carries a
description for /docs. The predict bodies are in predict_request.py and predict_response.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.watch_schemas import CalibrationWatchPublic

# A number that is a number: no bool, no string, no NaN or Infinity.
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]


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

"""Open Inference Protocol (V2, KServe / Triton) request bodies and the tensors mcdrop exposes.

Only the request side is validated with pydantic; responses are plain dicts built in
service.api.routes.v2, since their tensors may travel as binary instead of JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

ParamValue = bool | int | float | str

# Datatypes an input may use, and the numpy type of their binary (little-endian) form.
INPUT_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "FP16": np.dtype("<f2"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
OUTPUT_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "INT64": np.dtype("<i8"),
    "BOOL": np.dtype("?"),
}

# Request parameters mcdrop understands; anything else is refused rather than ignored.
REQUEST_PARAMETERS = (
    "samples",
    "seed",
    "threshold",
    "uncertainty_metric",
    "max_samples",
    "confidence",
    "refer",
    "binary_data_output",
)


class InferInput(BaseModel):
    """One input tensor: its data inline (JSON) or in the binary part (binary_data_size)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, ParamValue] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    """An output the client wants, optionally as binary (parameters.binary_data)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, ParamValue] | None = None


class InferRequest(BaseModel):
    """POST /v2/models/{name}/infer."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, max_length=256)
    # Not in the request schema, but the protocol's binary-data example sends it; when given it
    # must name the model in the path.
    model_name: str | None = Field(default=None, max_length=128)
    model_version: str | None = Field(default=None, max_length=64)
    parameters: dict[str, ParamValue] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


def output_specs(task: str, outputs: int) -> list[tuple[str, str, list[int]]]:
    """(name, datatype, shape) of every output a model of this task and width produces.

    The last four come only with parameters.samples "auto" (adaptive sampling).
    """
    specs = [
        ("mean", "FP32", [-1, outputs]),
        ("variance", "FP32", [-1, outputs]),
        ("uncertainty", "FP32", [-1]),
        ("abstain", "BOOL", [-1]),
    ]
    if task == "classification":
        specs += [
            ("probabilities", "FP32", [-1, outputs]),
            ("label", "INT64", [-1]),
            ("predictive_entropy", "FP32", [-1]),
            ("mutual_information", "FP32", [-1]),
            ("variation_ratio", "FP32", [-1]),
        ]
    else:
        specs += [
            ("epistemic_variance", "FP32", [-1, outputs]),
            ("aleatoric_variance", "FP32", [-1, outputs]),
        ]
    specs += [
        ("samples_used", "INT64", [-1]),
        ("mean_se", "FP32", [-1, outputs]),
        ("uncertainty_se", "FP32", [-1]),
        ("decision_settled", "BOOL", [-1]),
    ]
    return specs


ADAPTIVE_OUTPUTS = ("samples_used", "mean_se", "uncertainty_se", "decision_settled")


class V2Error(BaseModel):
    """The protocol's error body."""

    error: str = Field(description="What was wrong, naming the field or tensor.")


def _v2(description: str) -> dict[str, Any]:
    return {"model": V2Error, "description": description}


# Documented on every V2 route (router level), as the protocol answers errors.
V2_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _v2("Invalid request: framing, tensor, datatype, shape or parameters (named)."),
    401: _v2("API keys are configured and the request has none of them."),
    404: _v2("No model of that name, or not that version."),
    413: _v2("The request body is over the limit (MCDROP_MAX_BODY_BYTES)."),
    503: _v2("The model is not ready, or the server is overloaded or shutting down."),
    504: _v2("The request's deadline (MCDROP_REQUEST_TIMEOUT_S) passed."),
}

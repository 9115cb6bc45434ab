"""V2 infer requests to `Predictor.infer` arguments, and its result to V2 output tensors.

Request parameters are typed by hand here: the protocol sends them as an untyped map, and an
error must name the parameter (`parameters.seed: expected an integer`) with a 400.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.api.v2_binary import ProtocolError, decode_inputs
from service.api.v2_schemas import (
    ADAPTIVE_OUTPUTS,
    REQUEST_PARAMETERS,
    InferRequest,
    ParamValue,
    output_specs,
)
from service.serving.model import MAX_SEED
from service.serving.predictor import Inference, PredictParams

Tensors = dict[str, tuple[str, NDArray[Any]]]


def decode_input(req: InferRequest, binary: bytes) -> NDArray[np.float64]:
    """The one input tensor `input`, [N, ...], as decoded (no round trip through lists)."""
    if len(req.inputs) != 1 or req.inputs[0].name != "input":
        raise ProtocolError("inputs: expected exactly one input, named 'input'")
    x = decode_inputs(req.inputs, binary)[0]
    if x.ndim < 2:
        raise ProtocolError("inputs.0.shape: expected [N, ...] with N rows")
    return x


def check_parameters(req: InferRequest) -> dict[str, ParamValue]:
    params = dict(req.parameters or {})
    unknown = sorted(set(params) - set(REQUEST_PARAMETERS))
    if unknown:
        raise ProtocolError(
            f"parameters: unknown {unknown[:5]}; mcdrop understands {list(REQUEST_PARAMETERS)}"
        )
    return params


def predict_params(params: dict[str, ParamValue], request_id: str) -> PredictParams:
    """The request's parameters, typed and checked, as the Predictor takes them."""
    refer = params.get("refer", True)
    if not isinstance(refer, bool):
        raise ProtocolError("parameters.refer: expected a boolean")
    auto = params.get("samples") == "auto"
    if not auto:
        for key in ("max_samples", "confidence"):
            if key in params:
                raise ProtocolError(f'parameters.{key}: applies only with samples "auto"')
    return PredictParams(
        samples="auto" if auto else _int(params, "samples"),
        seed=_int(params, "seed"),
        threshold=_float(params, "threshold"),
        metric=_str(params, "uncertainty_metric"),
        refer=refer,
        request_id=request_id,
        max_samples=_int(params, "max_samples"),
        confidence=_float(params, "confidence"),
    )


def response_head(req: InferRequest, out: Inference) -> dict[str, Any]:
    """Everything of the response but its outputs."""
    result = out.result
    head: dict[str, Any] = {"model_name": out.name, "model_version": out.model.manifest.version}
    if req.id is not None:
        head["id"] = req.id
    parameters: dict[str, Any] = {
        "samples": result.samples,
        "seed": result.seed,
        "threshold": result.threshold,
        "uncertainty_metric": result.metric,
    }
    if result.adaptive is not None:
        parameters["max_samples"] = result.adaptive.max_samples
        parameters["confidence"] = result.adaptive.confidence
    if result.referral_ids and any(result.referral_ids):
        # Referred rows' ids in the queue, row-aligned (null where the row was not referred).
        parameters["referral_ids"] = result.referral_ids
    head["parameters"] = parameters
    return head


def output_tensors(out: Inference) -> Tensors:
    """Every output this result has, by name: (datatype, array)."""
    result = out.result
    arrays = result.outputs()
    if result.adaptive is not None:
        arrays.update(result.adaptive.outputs())
    specs = output_specs(result.task, out.model.manifest.architecture.output_dim)
    return {name: (datatype, arrays[name]) for name, datatype, _ in specs if name in arrays}


def wanted_outputs(
    req: InferRequest, params: dict[str, ParamValue], tensors: Tensors
) -> list[tuple[str, bool]]:
    """(name, as_binary) of the outputs to send: those asked for, or all of them."""
    default_binary = params.get("binary_data_output") is True
    if req.outputs is None:
        return [(n, default_binary) for n in tensors]
    wanted = []
    for i, o in enumerate(req.outputs):
        if o.name not in tensors:
            extra = ' (only with parameters.samples "auto")' if o.name in ADAPTIVE_OUTPUTS else ""
            raise ProtocolError(
                f"outputs.{i}.name: '{o.name[:64]}' is not an output of this model{extra}; "
                f"expected one of {list(tensors)}"
            )
        p = o.parameters or {}
        if set(p) - {"binary_data"}:
            raise ProtocolError(f"outputs.{i}.parameters: only 'binary_data' is understood")
        wanted.append((o.name, p.get("binary_data", default_binary) is True))
    return wanted


def _int(params: dict[str, ParamValue], key: str) -> int | None:
    v = params.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        also = ' or "auto"' if key == "samples" else ""
        raise ProtocolError(f"parameters.{key}: expected an integer{also}")
    if key == "seed" and not 0 <= v <= MAX_SEED:
        raise ProtocolError(f"parameters.seed: expected an integer in [0, {MAX_SEED}]")
    return v


def _float(params: dict[str, ParamValue], key: str) -> float | None:
    v = params.get(key)
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not np.isfinite(v):
        raise ProtocolError(f"parameters.{key}: expected a finite number")
    if key == "confidence" and not 0.5 < v < 1.0:
        raise ProtocolError("parameters.confidence: expected a number in (0.5, 1)")
    return float(v)


def _str(params: dict[str, ParamValue], key: str) -> str | None:
    v = params.get(key)
    if v is not None and not isinstance(v, str):
        raise ProtocolError(f"parameters.{key}: expected a string")
    return v

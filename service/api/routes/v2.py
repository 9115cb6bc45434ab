"""The Open Inference Protocol (V2) REST endpoints, as spoken by KServe, Triton and MLServer.

These routes translate V2 requests into the same predict flow as /predict. Errors follow the
protocol: `{"error": "..."}` with 400 for a bad request (where /predict says 422), 404 for an
unknown model or version; not-ready and overload keep their 503.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.api.deps import MetricsDep, PredictorDep
from service.api.v2_binary import HEADER, ProtocolError, decode_inputs, encode_response, split_body
from service.api.v2_schemas import (
    ADAPTIVE_OUTPUTS,
    REQUEST_PARAMETERS,
    V2_ERROR_RESPONSES,
    InferRequest,
    ParamValue,
    output_specs,
)
from service.errors import MCDropError, ModelNotFound, ModelNotReady
from service.serving.adaptive import AdaptivePrediction, predict_adaptive
from service.serving.model import MAX_SEED, MCDropoutModel, Prediction
from service.serving.predictor import Predictor, PredictParams
from service.serving.registry import ModelEntry

router = APIRouter(prefix="/v2", tags=["v2"], responses=V2_ERROR_RESPONSES)

Handler = Callable[..., Awaitable[Response]]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def v2_errors(handler: Handler) -> Handler:
    """Answer every failure of a V2 route as {"error": ...} with the protocol's status."""

    @wraps(handler)
    async def wrapped(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except ProtocolError as e:
            return _error(400, str(e))
        except MCDropError as e:
            return _error(400 if e.status_code == 422 else e.status_code, e.message)

    return wrapped


@router.get("")
@v2_errors
async def server_metadata(request: Request) -> Response:
    """Server name, version and the protocol extensions it supports."""
    return JSONResponse(
        {
            "name": "mcdrop",
            "version": request.app.version,
            "extensions": ["binary_tensor_data", "model_repository"],
        }
    )


@router.get("/health/live")
async def server_live() -> Response:
    """200 while the process answers."""
    return JSONResponse({"live": True})


@router.get("/health/ready")
async def server_ready(predictor: PredictorDep) -> Response:
    """200 once models are loaded and at least one serves; 400 before (as Triton answers)."""
    ok = predictor.registry.loaded and predictor.registry.any_ready()
    return JSONResponse({"ready": ok}, status_code=200 if ok else 400)


def _entry(predictor: Predictor, name: str, version: str | None) -> ModelEntry:
    entry = predictor.registry.entry(name)
    have = entry.manifest.version if entry.manifest is not None else None
    if version is not None and version != have:
        raise ModelNotFound(f"model '{name}' has no version '{version[:32]}' (it has {have})")
    return entry


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
@v2_errors
async def model_metadata(
    name: str, predictor: PredictorDep, version: str | None = None
) -> Response:
    """Inputs and outputs of a model, with datatypes and shapes (-1: any number of rows)."""
    entry = _entry(predictor, name, version)
    m = entry.manifest
    if m is None:
        raise ModelNotReady(f"model '{name}' is not ready: {entry.reason}")
    platform = f"mcdrop_{entry.model.engine.name}" if entry.model is not None else "mcdrop"
    specs = output_specs(m.task, m.architecture.output_dim)
    return JSONResponse(
        {
            "name": name,
            "versions": [m.version],
            "platform": platform,
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *m.input_shape]}],
            "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in specs],
        }
    )


@router.get("/models/{name}/ready")
@router.get("/models/{name}/versions/{version}/ready")
@v2_errors
async def model_ready(name: str, predictor: PredictorDep, version: str | None = None) -> Response:
    """200 when the model serves, 400 when it failed to load (404 when there is no such model)."""
    entry = _entry(predictor, name, version)
    return JSONResponse(
        {"name": name, "ready": entry.ready}, status_code=200 if entry.ready else 400
    )


@router.post("/repository/index")
@v2_errors
async def repository_index(request: Request, predictor: PredictorDep) -> Response:
    """Read-only: every model folder found, its version and state (READY or UNAVAILABLE)."""
    raw = await request.body()
    ready_only = False
    if raw.strip():
        try:
            body = json.loads(raw)
        except ValueError:
            raise ProtocolError("body: expected a JSON object") from None
        if not isinstance(body, dict) or set(body) - {"repository_name", "ready"}:
            raise ProtocolError("body: expected an object with optional 'ready' (bool)")
        ready_only = body.get("ready") is True
    registry = predictor.registry
    if not registry.loaded:
        raise ModelNotReady("models are still loading; retry shortly")
    index = []
    for name, e in sorted(registry.entries.items()):
        if ready_only and not e.ready:
            continue
        item: dict[str, Any] = {"name": name, "state": "READY" if e.ready else "UNAVAILABLE"}
        if e.manifest is not None:
            item["version"] = e.manifest.version
        if e.reason:
            item["reason"] = e.reason
        index.append(item)
    return JSONResponse(index)


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
@v2_errors
async def infer(
    name: str,
    request: Request,
    predictor: PredictorDep,
    metrics: MetricsDep,
    version: str | None = None,
) -> Response:
    """Run the model on the one input tensor `input` ([N, ...input_shape] or [N, features])."""
    entry = _entry(predictor, name, version)
    request.state.model = name
    model = predictor.model(name)
    head_bytes, binary = split_body(await request.body(), request.headers.get(HEADER))
    req = _parse(head_bytes)
    if req.model_name not in (None, name) or req.model_version not in (None, version):
        raise ProtocolError("model_name/model_version: the body names another model than the path")
    params = dict(req.parameters or {})
    unknown = sorted(set(params) - set(REQUEST_PARAMETERS))
    if unknown:
        raise ProtocolError(
            f"parameters: unknown {unknown[:5]}; mcdrop understands {list(REQUEST_PARAMETERS)}"
        )
    if len(req.inputs) != 1 or req.inputs[0].name != "input":
        raise ProtocolError("inputs: expected exactly one input, named 'input'")
    x = decode_inputs(req.inputs, binary)[0]
    if x.ndim < 2:
        raise ProtocolError("inputs.0.shape: expected [N, ...] with N rows")
    rows = x.tolist()  # the predictor counts rows and applies the same limits as /predict
    samples = params.get("samples")
    adaptive: AdaptivePrediction | None = None
    refer = params.get("refer", True)
    if not isinstance(refer, bool):
        raise ProtocolError("parameters.refer: expected a boolean")
    request_id = str(request.state.request_id)
    if samples == "auto":
        adaptive = await predict_adaptive(
            predictor,
            model,
            rows,
            seed=_int(params, "seed"),
            threshold=_float(params, "threshold"),
            metric=_str(params, "uncertainty_metric"),
            max_samples=_int(params, "max_samples"),
            confidence=_float(params, "confidence"),
            refer=refer,
            request_id=request_id,
        )
        pred = adaptive.prediction
        metrics.observe_prediction(name, pred, int(adaptive.samples_used.sum()))
    else:
        for key in ("max_samples", "confidence"):
            if key in params:
                raise ProtocolError(f'parameters.{key}: applies only with samples "auto"')
        p = PredictParams(
            samples=_int(params, "samples"),
            seed=_int(params, "seed"),
            threshold=_float(params, "threshold"),
            metric=_str(params, "uncertainty_metric"),
            refer=refer,
            request_id=request_id,
        )
        pred = await predictor.predict(model, rows, p)
        metrics.observe_prediction(name, pred)
    tensors = _outputs(model, pred, adaptive)
    wanted = _wanted(req, params, tensors, adaptive is not None)
    head: dict[str, Any] = {"model_name": name, "model_version": entry.manifest.version}  # type: ignore[union-attr]
    if req.id is not None:
        head["id"] = req.id
    head["parameters"] = {
        "samples": pred.samples,
        "seed": pred.seed,
        "threshold": pred.threshold,
        "uncertainty_metric": pred.metric,
    }
    if adaptive is not None:
        head["parameters"].update(max_samples=adaptive.max_samples, confidence=adaptive.confidence)
    if pred.referral_ids and any(pred.referral_ids):
        # Referred rows' ids in the queue, row-aligned (null where the row was not referred).
        head["parameters"]["referral_ids"] = pred.referral_ids
    body, json_length = encode_response(
        head, [(n, tensors[n][0], tensors[n][1], binary_out) for n, binary_out in wanted]
    )
    if json_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={HEADER: str(json_length)})


def _parse(head: bytes) -> InferRequest:
    try:
        return InferRequest.model_validate_json(head)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ProtocolError(f"{where}: {err['msg']}") from None


def _outputs(
    model: MCDropoutModel, pred: Prediction, adaptive: AdaptivePrediction | None
) -> dict[str, tuple[str, np.ndarray[Any, Any]]]:
    """Every output this prediction has, by name: (datatype, array)."""
    specs = output_specs(model.task, model.manifest.architecture.output_dim)
    out = {}
    for name, datatype, _ in specs:
        source = adaptive if name in ADAPTIVE_OUTPUTS else pred
        value = getattr(source, name, None) if source is not None else None
        if value is not None:
            out[name] = (datatype, value)
    return out


def _wanted(
    req: InferRequest,
    params: dict[str, ParamValue],
    tensors: dict[str, tuple[str, np.ndarray[Any, Any]]],
    adaptive: bool,
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

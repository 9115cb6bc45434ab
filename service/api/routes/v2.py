"""The Open Inference Protocol (V2) REST endpoints, as spoken by KServe, Triton and MLServer.

These routes translate V2 requests to and from `Predictor.infer`, as /predict does for REST.
Errors follow the protocol: `{"error": "..."}` with 400 for a bad request (where /predict says
422), 404 for an unknown model or version; not-ready and overload keep their 503.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from service.api.deps import PredictorDep
from service.api.v2_binary import HEADER, ProtocolError, encode_response, split_body
from service.api.v2_schemas import V2_ERROR_RESPONSES, InferRequest, output_specs
from service.api.v2_translate import (
    check_parameters,
    decode_input,
    output_tensors,
    predict_params,
    response_head,
    wanted_outputs,
)
from service.errors import MCDropError, ModelNotFound, ModelNotReady
from service.serving.predictor import Predictor
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


# Path parameters documented by hand: the infer routes read them from request.path_params, so
# FastAPI validates no parameters per request (and `version` is not also a query parameter).
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}


# Declared first: a request is matched against the routes in order, and infer is the hot one.
@router.post("/models/{name}/infer", openapi_extra={"parameters": [_NAME]})
@router.post(
    "/models/{name}/versions/{version}/infer", openapi_extra={"parameters": [_NAME, _VERSION]}
)
@v2_errors
async def infer(request: Request) -> Response:
    """Run the model on the one input tensor `input` ([N, ...input_shape] or [N, features])."""
    # The hot path takes the predictor from app.state, as /predict does: FastAPI would solve a
    # dependency per request.
    path = request.path_params
    name: str = path["name"]
    version: str | None = path.get("version")
    predictor: Predictor = request.app.state.predictor
    _entry(predictor, name, version)
    request.state.model = name
    predictor.model(name)  # not ready: 503 before the body is read
    head_bytes, binary = split_body(await request.body(), request.headers.get(HEADER))
    req = _parse(head_bytes)
    if req.model_name not in (None, name) or req.model_version not in (None, version):
        raise ProtocolError("model_name/model_version: the body names another model than the path")
    raw_params = check_parameters(req)
    x = decode_input(req, binary)
    params = predict_params(raw_params, str(request.state.request_id))
    out = await predictor.infer(name, x, params)
    tensors = output_tensors(out)
    wanted = wanted_outputs(req, raw_params, tensors)
    body, json_length = encode_response(
        response_head(req, out),
        [(n, tensors[n][0], tensors[n][1], binary_out) for n, binary_out in wanted],
    )
    if json_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={HEADER: str(json_length)})


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


def _parse(head: bytes) -> InferRequest:
    try:
        return InferRequest.model_validate_json(head)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise ProtocolError(f"{where}: {err['msg']}") from None

"""POST /predict and POST /v1/models/{name}/predict: rows in, one decision per row out.

These routes translate REST v1 to and from `Predictor.infer`, which does all the work."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.api.errors import ERROR_RESPONSES
from service.api.predict_request import DefaultPredictRequest, PredictRequest
from service.api.predict_response import PredictResponse, to_response
from service.serving.predictor import Predictor, PredictParams

router = APIRouter(tags=["predict"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    k: ERROR_RESPONSES[k] for k in (401, 404, 413, 422, 500, 503, 504)
}


# The predict routes are the hot path, so they take the app's objects from request.app.state
# instead of Depends (FastAPI solves each dependency per request), and they return the JSON
# bytes themselves, serialized once by pydantic, instead of FastAPI validating the returned
# model again before serializing it. response_model still documents the body in /docs.


@router.post("/predict", response_model=PredictResponse, responses=_ERRORS)
async def predict_default(body: DefaultPredictRequest, request: Request) -> Response:
    """Predict with the model named in the body, or the server's default model."""
    return await _predict(body.model, body, request)


@router.post("/v1/models/{name}/predict", response_model=PredictResponse, responses=_ERRORS)
async def predict_named(name: str, body: PredictRequest, request: Request) -> Response:
    """Predict with the model in the path."""
    return await _predict(name, body, request)


async def _predict(name: str | None, body: PredictRequest, request: Request) -> Response:
    predictor: Predictor = request.app.state.predictor
    registry = predictor.registry
    resolved = name if name is not None else registry.default_name
    if resolved in registry.entries:  # only known names label metrics: no unbounded label sets
        request.state.model = resolved
    request_id = str(request.state.request_id)
    params = PredictParams(
        samples=body.samples,
        seed=body.seed,
        threshold=body.threshold,
        metric=body.uncertainty_metric,
        return_samples=body.return_samples,
        refer=body.refer,
        request_id=request_id,
        timeout_ms=body.timeout_ms,
        max_samples=body.max_samples,
        confidence=body.confidence,
    )
    out = await predictor.infer(resolved, body.inputs, params)
    body_json = to_response(out, request_id).model_dump_json()
    return Response(body_json, media_type="application/json")

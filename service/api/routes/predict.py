"""POST /predict and POST /v1/models/{name}/predict: rows in, one decision per row out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.api.errors import ERROR_RESPONSES
from service.api.metrics import ServiceMetrics
from service.api.schemas import (
    ClassificationPrediction,
    DefaultPredictRequest,
    PredictRequest,
    PredictResponse,
    RegressionPrediction,
)
from service.serving.adaptive import predict_adaptive
from service.serving.model import MCDropoutModel, Prediction
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


def _json(response: PredictResponse) -> Response:
    return Response(response.model_dump_json(), media_type="application/json")


async def _predict(name: str | None, body: PredictRequest, request: Request) -> Response:
    predictor: Predictor = request.app.state.predictor
    metrics: ServiceMetrics = request.app.state.metrics
    registry = predictor.registry
    resolved = name if name is not None else registry.default_name
    if resolved in registry.entries:  # only known names label metrics: no unbounded label sets
        request.state.model = resolved
    model = predictor.model(resolved)
    assert resolved is not None  # predictor.model found it
    if body.samples == "auto":
        return _json(await _predict_auto(resolved, model, body, request, predictor, metrics))
    params = PredictParams(
        samples=body.samples,
        seed=body.seed,
        threshold=body.threshold,
        metric=body.uncertainty_metric,
        return_samples=body.return_samples,
        refer=body.refer,
        request_id=str(request.state.request_id),
        timeout_ms=body.timeout_ms,
    )
    pred = await predictor.predict(model, body.inputs, params)
    metrics.observe_prediction(resolved, pred)
    return _json(to_response(resolved, model, pred, str(request.state.request_id)))


async def _predict_auto(
    name: str,
    model: MCDropoutModel,
    body: PredictRequest,
    request: Request,
    predictor: Predictor,
    metrics: ServiceMetrics,
) -> PredictResponse:
    out = await predict_adaptive(
        predictor,
        model,
        body.inputs,
        seed=body.seed,
        threshold=body.threshold,
        metric=body.uncertainty_metric,
        max_samples=body.max_samples,
        confidence=body.confidence,
        timeout_ms=body.timeout_ms,
        refer=body.refer,
        request_id=str(request.state.request_id),
    )
    metrics.observe_prediction(name, out.prediction, int(out.samples_used.sum()))
    response = to_response(name, model, out.prediction, str(request.state.request_id))
    used, settled = out.samples_used.tolist(), out.decision_settled.tolist()
    mean_se, unc_se = out.mean_se.tolist(), out.uncertainty_se.tolist()
    for i, row in enumerate(response.predictions):
        row.samples_used, row.decision_settled = used[i], settled[i]
        row.mean_se, row.uncertainty_se = mean_se[i], unc_se[i]
    return response


def to_response(
    name: str, model: MCDropoutModel, pred: Prediction, request_id: str
) -> PredictResponse:
    """Prediction arrays → one object per row. `tolist()` converts whole arrays at C speed.
    (Not model_construct: pydantic's validation runs in Rust, model_construct in Python,
    so skipping validation is slower here.)"""
    mean, var = pred.mean.tolist(), pred.variance.tolist()
    unc, abstain = pred.uncertainty.tolist(), pred.abstain.tolist()
    ref = pred.referral_ids or [None] * len(abstain)
    reason = pred.reason or [None] * len(abstain)
    rows: list[RegressionPrediction] | list[ClassificationPrediction]
    if pred.task == "regression":
        assert pred.std is not None and pred.epistemic_variance is not None
        assert pred.aleatoric_variance is not None
        std, epi = pred.std.tolist(), pred.epistemic_variance.tolist()
        alea = pred.aleatoric_variance.tolist()
        rows = [
            RegressionPrediction(
                mean=mean[i],
                variance=var[i],
                uncertainty=unc[i],
                abstain=abstain[i],
                referral_id=ref[i],
                reason=reason[i],
                std=std[i],
                epistemic_variance=epi[i],
                aleatoric_variance=alea[i],
            )
            for i in range(len(mean))
        ]
    else:
        assert pred.label is not None and pred.probabilities is not None
        assert pred.predictive_entropy is not None and pred.mutual_information is not None
        assert pred.variation_ratio is not None
        names = model.manifest.class_labels
        probs, labels = pred.probabilities.tolist(), pred.label.tolist()
        ent, mi = pred.predictive_entropy.tolist(), pred.mutual_information.tolist()
        vr = pred.variation_ratio.tolist()
        rows = [
            ClassificationPrediction(
                mean=mean[i],
                variance=var[i],
                uncertainty=unc[i],
                abstain=abstain[i],
                referral_id=ref[i],
                reason=reason[i],
                probabilities=probs[i],
                label=labels[i],
                class_label=names[labels[i]] if names else None,
                predictive_entropy=ent[i],
                mutual_information=mi[i],
                variation_ratio=vr[i],
            )
            for i in range(len(mean))
        ]
    return PredictResponse(
        model=name,
        version=model.manifest.version,
        task=model.manifest.task,
        samples=pred.samples,
        seed=pred.seed,
        threshold=pred.threshold,
        uncertainty_metric=pred.metric,
        request_id=request_id,
        predictions=rows,
        raw_samples=pred.raw_samples.tolist() if pred.raw_samples is not None else None,
    )

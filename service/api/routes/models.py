"""GET /v1/models and GET /v1/models/{name}: what is served, and how to call it."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import PredictorDep
from service.api.errors import ERROR_RESPONSES
from service.api.schemas import ModelList, ModelPublic
from service.api.watch_schemas import watch_public
from service.serving.model import metrics_for
from service.serving.predictor import Predictor
from service.serving.registry import ModelEntry

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, responses={k: ERROR_RESPONSES[k] for k in (401, 503)})
async def list_models(predictor: PredictorDep) -> ModelList:
    """Every model folder found at start-up or the last reload, with readiness, the reason when
    not ready, and the error of a failed reload."""
    registry = predictor.registry
    if not registry.loaded:
        # Same answer as any model lookup before loading ends.
        registry.get(None)
    entries = [describe(predictor, e) for _, e in sorted(registry.entries.items())]
    return ModelList(default_model=registry.default_name, models=entries)


@router.get(
    "/{name}",
    response_model=ModelPublic,
    responses={k: ERROR_RESPONSES[k] for k in (401, 404, 503)},
)
async def get_model(name: str, predictor: PredictorDep) -> ModelPublic:
    """One model's description, ready or not."""
    return describe(predictor, predictor.registry.entry(name))


def describe(predictor: Predictor | None, entry: ModelEntry) -> ModelPublic:
    out = ModelPublic(
        name=entry.name, ready=entry.ready, reason=entry.reason, reload_error=entry.reload_error
    )
    watches = getattr(predictor, "watches", None)  # describing a folder needs no predictor
    if watches is not None:
        out.calibration_watch = watch_public(watches.view(entry.name))
    m = entry.manifest
    if m is None:
        return out
    out.version, out.task, out.input_shape = m.version, m.task, m.input_shape
    out.feature_names, out.output_names, out.class_labels = (
        m.feature_names,
        m.output_names,
        m.class_labels,
    )
    scale = m.normalization.input_scale
    # The scale maps raw inputs onto [0, 1] (pixels), so the raw range is 0 to 1/scale.
    out.input_range = [0.0, round(1.0 / scale, 6)] if scale > 0 and scale != 1.0 else None
    out.image_zero = m.image_zero
    out.tau, out.threshold, out.calibrated = m.tau, m.threshold, m.calibration is not None
    out.uncertainty_metric, out.uncertainty_metrics = (
        m.uncertainty_metric,
        list(metrics_for(m.task)),
    )
    if entry.model is not None and predictor is not None:
        out.default_samples = predictor.default_samples(entry.model)
        out.max_samples = predictor.max_samples(entry.model)
        out.engine, out.device = entry.model.engine.name, entry.model.engine.device
    return out

"""Liveness and readiness, separate: a replica that is alive but not ready gets no traffic."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import PredictorDep
from service.api.schemas import Liveness, Readiness

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Liveness)
async def live() -> Liveness:
    """200 while the process answers (inference runs off the event loop)."""
    return Liveness(status="alive")


@router.get(
    "/ready",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "Still loading, no model ready, or draining."}
    },
)
async def ready(predictor: PredictorDep) -> JSONResponse:
    """200 once models are loaded and at least one serves; 503 before that, and from SIGTERM on
    (the server is draining: it finishes what it has and takes nothing new)."""
    registry = predictor.registry
    draining = predictor.admission is not None and predictor.admission.draining
    ok = registry.loaded and registry.any_ready() and not draining
    body = Readiness(
        status="ready" if ok else "not ready",
        models={name: e.ready for name, e in sorted(registry.entries.items())},
        reason="shutting down" if draining else registry.not_ready_reason(),
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

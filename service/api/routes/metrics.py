"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import MetricsDep
from service.api.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(m: MetricsDep) -> Response:
    """Request counts and latency per model and status, MC samples drawn, abstentions and the
    uncertainty histogram per model, model readiness."""
    return Response(m.render(), media_type=CONTENT_TYPE)

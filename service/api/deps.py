"""Dependencies the routes share, as Annotated aliases.

They are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, a
thread round trip per dependency per request, a visible share of the event loop's time under
load (docs/performance.md). These only read app state, so they never block."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.metrics import ServiceMetrics
from service.config import Settings
from service.serving.predictor import Predictor


async def get_predictor(request: Request) -> Predictor:
    predictor: Predictor = request.app.state.predictor
    return predictor


async def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


PredictorDep = Annotated[Predictor, Depends(get_predictor)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

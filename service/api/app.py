"""The app factory. Nothing heavy happens at import or in `create_app`: models load once, in the
lifespan, before the server takes traffic."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from fastapi import FastAPI

from service.api.auth import ApiKeyMiddleware, load_api_keys
from service.api.errors import install_error_handlers
from service.api.lifecycle import install_sighup, publish_readiness
from service.api.metrics import ServiceMetrics
from service.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from service.api.routes import (
    admin,
    docs,
    health,
    metrics,
    models,
    predict,
    referrals,
    review,
    v2,
)
from service.api.watch_metrics import WatchCollector
from service.config import Settings
from service.engines import EngineRuntime
from service.serving.admission import AdmissionController
from service.serving.predictor import Limits, Predictor
from service.serving.registry import ModelRegistry
from service.serving.runner import DirectRunner, Runner
from service.serving.watch import CalibrationWatches

if TYPE_CHECKING:
    from service.referrals.recorder import ReferralRecorder

log = logging.getLogger("mcdrop.api")


def make_runner(settings: Settings, service_metrics: ServiceMetrics | None = None) -> Runner:
    """The one place that picks how samples are drawn: batched across requests, or directly."""
    if settings.batching:
        try:
            from service.serving.batcher import BatchingRunner
        except ModuleNotFoundError:
            log.warning("MCDROP_BATCHING is set but this build has no batcher; serving directly")
        else:
            runner: Runner = BatchingRunner(
                wait_ms=settings.batch_wait_ms,
                max_rows=settings.batch_max_rows,
                on_batch=service_metrics.observe_batch if service_metrics else None,
                workers=settings.engine_workers,
            )
            return runner
    return DirectRunner(workers=settings.engine_workers)


def make_watches(
    settings: Settings, registry: ModelRegistry, recorder: ReferralRecorder | None
) -> CalibrationWatches:
    """The calibration watch; its alarm goes out on the referral webhook when one is set."""
    webhook = recorder.webhook if recorder is not None else None
    return CalibrationWatches(
        registry,
        alpha=settings.watch_alpha,
        window=settings.watch_window,
        enabled=settings.calibration_watch,
        notify=webhook.notify_event if webhook is not None else None,
    )


def _package_version() -> str:
    try:
        return version("mcdrop")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def _make_registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(
        settings.model_dir,
        default_model=settings.default_model,
        runtime=EngineRuntime.from_settings(settings),
    )


def _make_predictor(
    settings: Settings,
    registry: ModelRegistry,
    service_metrics: ServiceMetrics,
    recorder: ReferralRecorder | None,
) -> Predictor:
    """The data plane: limits, admission, the runner, referrals and the calibration watch."""
    limits = Limits(
        max_rows=settings.max_rows,
        max_samples=settings.max_samples,
        max_sample_rows=settings.max_sample_rows,
        max_returned_values=settings.max_returned_values,
    )
    admission = AdmissionController(
        settings.max_inflight_sample_rows, settings.max_queued_requests, settings.request_timeout_s
    )
    watches = make_watches(settings, registry, recorder)
    service_metrics.registry.register(WatchCollector(watches))
    return Predictor(
        registry,
        make_runner(settings, service_metrics),
        limits,
        referrals=recorder,
        admission=admission,
        watches=watches,
        observer=service_metrics,
    )


def _make_recorder(settings: Settings, service_metrics: ServiceMetrics) -> ReferralRecorder | None:
    if not settings.referrals:
        return None
    from service.referrals.recorder import recorder_from_settings

    return recorder_from_settings(settings, service_metrics.registry)


def _lifespan(
    predictor: Predictor, service_metrics: ServiceMetrics, recorder: ReferralRecorder | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up loads every model before traffic; shut-down drains the runner and the recorder."""
    registry = predictor.registry

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(registry.load_all)
        publish_readiness(registry, service_metrics)
        ready = sorted(n for n, e in registry.entries.items() if e.ready)
        log.info("serving %d model(s) from '%s': %s", len(ready), registry.model_dir, ready)
        # Objects alive after start-up (torch, models, the app) never become garbage: move them
        # out of the collector's reach, so full collections under load stay short and do not
        # stall the event loop (and with it /health/live).
        gc.collect()
        gc.freeze()
        await predictor.runner.start()
        undo_sighup = install_sighup(app)
        if recorder is not None:
            await recorder.start()
        try:
            yield
        finally:
            undo_sighup()
            if recorder is not None:
                await recorder.stop()
            await predictor.runner.stop()
            gc.unfreeze()  # hand start-up objects back to the collector (tests build many apps)

    return lifespan


def _install_routes(app: FastAPI, with_referrals: bool) -> None:
    install_error_handlers(app)
    # Requests are matched against the routers in this order, each route tried in turn: the
    # predict routes and the probes first (health has two routes), then V2's infer.
    for module in (predict, health, v2, models, metrics, admin, docs):
        app.include_router(module.router)
    if with_referrals:
        app.include_router(referrals.router)
        app.include_router(review.router)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    logging.getLogger("mcdrop").setLevel(settings.log_level.upper())
    service_metrics = ServiceMetrics()
    registry = _make_registry(settings)
    recorder = _make_recorder(settings, service_metrics)
    predictor = _make_predictor(settings, registry, service_metrics, recorder)
    api_keys = load_api_keys(settings)  # ValueError (stops start-up) when unreadable or weak
    app = FastAPI(
        title="mcdrop",
        version=_package_version(),
        description="MC dropout predictions with predictive mean, variance and an abstain flag.",
        lifespan=_lifespan(predictor, service_metrics, recorder),
        # Served by routes/docs.py instead: from the package, not a CDN.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.predictor = predictor
    app.state.metrics = service_metrics
    app.state.referrals = recorder
    app.state.api_keys_configured = bool(api_keys)
    _install_routes(app, with_referrals=recorder is not None)
    # Added last = outermost: the request id exists before the key check or the body limit
    # answers, and a request without a key is refused before its body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, keys=api_keys, metrics_need_key=settings.metrics_need_key)
    app.add_middleware(RequestContextMiddleware, metrics=service_metrics)
    return app

"""Hot reload from the HTTP side: run the registry's rescan off the event loop, publish the new
readiness, and let SIGHUP trigger the same thing as POST /v1/admin/reload."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Sequence

from fastapi import FastAPI

from service.api.metrics import ServiceMetrics
from service.serving.registry import ModelRegistry

log = logging.getLogger("mcdrop.api")


def publish_readiness(
    registry: ModelRegistry, metrics: ServiceMetrics, removed: Sequence[str] = ()
) -> None:
    for name, entry in registry.entries.items():
        metrics.set_model_ready(name, entry.ready)
    for name in removed:
        metrics.forget_model(name)


async def reload_models(app: FastAPI) -> dict[str, list[str]]:
    """Rescan the model directory (ValueError when it is gone: everything keeps serving)."""
    registry: ModelRegistry = app.state.predictor.registry
    report = await asyncio.to_thread(registry.reload)
    publish_readiness(registry, app.state.metrics, report["removed"])
    return report


def install_sighup(app: FastAPI) -> Callable[[], None]:
    """SIGHUP → reload, when this loop may own signals; returns the undo for shutdown."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def reload_logged() -> None:
        try:
            await reload_models(app)
        except Exception as e:
            log.error("reload on SIGHUP failed, the models in service keep serving: %s", e)

    def on_sighup() -> None:
        task = loop.create_task(reload_logged())
        tasks.add(task)  # keep a reference until done
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


__all__ = ["install_sighup", "publish_readiness", "reload_models"]

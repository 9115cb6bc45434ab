"""POST /v1/admin/reload: rescan the model directory (the same as sending SIGHUP).
POST /v1/admin/models/{name}/watch/reset: restart a model's calibration watch.

It changes what the server serves, so it needs an API key. With no keys configured there is no
one to trust over HTTP: the route answers 403 and SIGHUP (which needs the process owner's
rights) is the way to reload.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.errors import ERROR_RESPONSES
from service.api.lifecycle import reload_models
from service.api.schemas import ReloadReport
from service.api.watch_schemas import CalibrationWatchPublic, watch_public
from service.errors import Forbidden, ModelNotReady

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post(
    "/reload",
    response_model=ReloadReport,
    responses={k: ERROR_RESPONSES[k] for k in (401, 403, 500, 503)},
)
async def reload(request: Request) -> ReloadReport:
    """Load new and changed model folders beside the ones serving and swap them in at once;
    a folder that fails keeps its previous version serving (see reload_error in /v1/models)."""
    _need_keys(request, "admin reload", "; without keys, send SIGHUP to the server process")
    try:
        report = await reload_models(request.app)
    except ValueError as e:  # the model directory is gone: nothing changed
        raise ModelNotReady(f"reload failed, the models in service keep serving: {e}") from None
    return ReloadReport(**report)


@router.post(
    "/models/{name}/watch/reset",
    response_model=CalibrationWatchPublic,
    responses={k: ERROR_RESPONSES[k] for k in (401, 403, 404, 503)},
)
async def reset_watch(name: str, request: Request) -> CalibrationWatchPublic:
    """Restart a model's calibration watch: after recalibrating, or to acknowledge an alarm.
    The martingale goes back to 1 and the referral window empties."""
    _need_keys(request, "resetting the calibration watch", "")
    predictor = request.app.state.predictor
    entry = predictor.registry.entry(name)  # 404 for an unknown name
    if not entry.ready:
        raise ModelNotReady(f"model '{name}' is not ready: {entry.reason}")
    return watch_public(predictor.watches.reset(name))


def _need_keys(request: Request, what: str, otherwise: str) -> None:
    # With no keys configured there is no one to trust over HTTP with an admin action.
    if not request.app.state.api_keys_configured:
        raise Forbidden(
            f"{what} over HTTP needs MCDROP_API_KEYS (or MCDROP_API_KEYS_FILE){otherwise}"
        )

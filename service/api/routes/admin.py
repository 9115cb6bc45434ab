"""POST /v1/admin/reload: rescan the model directory (the same as sending SIGHUP).

It changes what the server serves, so it needs an API key. With no keys configured there is no
one to trust over HTTP: the route answers 403 and SIGHUP (which needs the process owner's
rights) is the way to reload.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.errors import ERROR_RESPONSES
from service.api.lifecycle import reload_models
from service.api.schemas import ReloadReport
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
    if not request.app.state.api_keys_configured:
        raise Forbidden(
            "admin reload over HTTP needs MCDROP_API_KEYS (or MCDROP_API_KEYS_FILE); "
            "without keys, send SIGHUP to the server process"
        )
    try:
        report = await reload_models(request.app)
    except ValueError as e:  # the model directory is gone: nothing changed
        raise ModelNotReady(f"reload failed, the models in service keep serving: {e}") from None
    return ReloadReport(**report)

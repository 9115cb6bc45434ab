"""Error responses. Every error leaves as {"error": "...", "detail": [...]}.

- Domain errors (service.errors.MCDropError) carry their own status: one handler maps them all.
- Request validation errors become 422 with each problem's field path and message, never the
  offending input (pydantic would echo it, and inputs can be megabytes).
- Anything else is a 500 with no internals; the traceback goes to the log with the request id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.api.json_types import not_a_number
from service.api.schemas import ErrorResponse
from service.errors import MCDropError, Overloaded

log = logging.getLogger("mcdrop.api")

MAX_DETAILS = 20  # a request with 100k bad numbers gets the first few, not a 100k-line reply
_FIELD_PREFIX = re.compile(r"^([A-Za-z_]+): (.+)$", re.DOTALL)


def error_body(message: str, detail: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"error": message, "detail": list(detail)}


def error_response(
    status: int, message: str, detail: Sequence[dict[str, Any]] = (), request_id: str = ""
) -> JSONResponse:
    headers = {"X-Request-ID": request_id} if request_id else None
    return JSONResponse(error_body(message, detail), status_code=status, headers=headers)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


async def domain_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MCDropError)
    detail = exc.detail
    if not detail and exc.status_code == 422:
        # Domain messages start with the field they are about ("inputs: expected ..."),
        # so a client can still locate the problem.
        m = _FIELD_PREFIX.match(exc.message)
        if m:
            detail = [{"loc": [m.group(1)], "msg": m.group(2), "type": "value_error"}]
    if exc.status_code >= 500 and not isinstance(exc, Overloaded):  # 503s come in floods
        log.warning("request %s: %s: %s", _request_id(request), type(exc).__name__, exc.message)
    response = error_response(exc.status_code, exc.message, detail, _request_id(request))
    response.headers.update(exc.headers)
    return response


def _located(err: dict[str, Any]) -> dict[str, Any]:
    if err.get("type") == "json_invalid":
        # FastAPI puts the character offset in loc; the parser's reason is safe to show.
        reason = str(err.get("ctx", {}).get("error", "not valid JSON"))
        at = err.get("loc", ("body", "?"))[-1]
        return {
            "loc": ["body"],
            "msg": f"invalid JSON at character {at}: {reason}",
            "type": "json_invalid",
        }
    loc = [p for p in err.get("loc", ()) if not isinstance(p, (dict, list))]
    if loc and loc[0] == "body":
        loc = loc[1:]  # every field is in the body; the path reads better without it
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", ""))
    if kind in _NUMBER_TYPES:
        msg = "expected a finite number" + not_a_number(err.get("input"))
    return {"loc": loc, "msg": msg, "type": kind}


_NUMBER_TYPES = {"float_type", "float_parsing"}


def _sent_json(request: Request) -> bool:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


_WRONG_CONTENT_TYPE = "send JSON with content-type: application/json"


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if not _sent_json(request) and any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        # FastAPI hands a non-JSON body over as bytes, so pydantic's complaint is about bytes.
        detail = [{"loc": ["body"], "msg": _WRONG_CONTENT_TYPE, "type": "content_type"}]
        return error_response(422, f"body: {_WRONG_CONTENT_TYPE}", detail, _request_id(request))
    detail = [_located(e) for e in errors[:MAX_DETAILS]]  # drops "input", "ctx", "url"
    first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"]) or "body"
    message = f"{where}: {first['msg']}"
    if len(errors) > 1:
        shown = f"; first {MAX_DETAILS} in detail" if len(errors) > MAX_DETAILS else ""
        more = len(errors) - 1
        message += f" (and {more} more problem{'s' if more > 1 else ''}{shown})"
    return error_response(422, message, detail, _request_id(request))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method) in the same shape as ours."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.__cause__ is not None:
        # FastAPI turns any body it cannot parse (other than a JSONDecodeError) into a vague
        # 400; it is the same kind of problem as invalid JSON, so the same status, with why.
        msg = _unparsable(exc.__cause__)
        detail = [{"loc": ["body"], "msg": msg, "type": "json_invalid"}]
        return error_response(422, f"body: {msg}", detail, _request_id(request))
    response = error_response(exc.status_code, str(exc.detail), (), _request_id(request))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _unparsable(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "invalid JSON: nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return f"invalid JSON: not UTF-8 text (byte {cause.start})"
    return "invalid JSON: the body could not be parsed"


def internal_error_response(request_id: str) -> JSONResponse:
    return error_response(
        500, f"internal error; quote request id {request_id} when reporting it", (), request_id
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MCDropError, domain_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# OpenAPI descriptions of the error statuses, for the routes that can return them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _documented(
        "API keys are configured and the request has none of them (X-API-Key or "
        "Authorization: Bearer)."
    ),
    403: _documented("The operation is switched off in this server's configuration."),
    404: _documented("No model of that name."),
    413: _documented("The request body is over the limit (MCDROP_MAX_BODY_BYTES)."),
    422: _documented(
        "Invalid request: wrong shape or width, non-finite numbers, booleans or strings "
        "where numbers belong, samples out of range, too many rows. Names the field."
    ),
    500: _documented("Unexpected server error; the X-Request-ID header identifies it in logs."),
    503: _documented(
        "The model is not ready, or the server is overloaded or shutting down (then with a "
        "Retry-After header)."
    ),
    504: _documented("The request's deadline (timeout_ms or MCDROP_REQUEST_TIMEOUT_S) passed."),
}

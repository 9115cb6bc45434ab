"""Domain errors. Each carries the HTTP status the API layer maps it to; nothing here imports HTTP
code."""

from __future__ import annotations

from typing import Any


class MCDropError(Exception):
    """Base class of every error mcdrop raises on purpose."""

    status_code: int = 500

    def __init__(
        self,
        message: str,
        detail: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or []
        self.headers = headers or {}  # e.g. Retry-After on 503, WWW-Authenticate on 401


class InvalidInput(MCDropError):
    """The request is well-formed JSON but its values are not what the model expects."""

    status_code = 422


class Unauthorized(MCDropError):
    """API keys are configured and the request carries none of them."""

    status_code = 401


class Forbidden(MCDropError):
    """The operation is switched off in this server's configuration."""

    status_code = 403


class ModelNotFound(MCDropError):
    """No model of that name is loaded."""

    status_code = 404


class ModelNotReady(MCDropError):
    """The model exists but failed to load or is still loading."""

    status_code = 503


class Overloaded(MCDropError):
    """Admission control refused the work; retry later."""

    status_code = 503


class RequestTimeout(MCDropError):
    """The request's deadline passed before its result was ready."""

    status_code = 504


class PayloadTooLarge(MCDropError):
    """The request body is over the configured limit."""

    status_code = 413


class ArtifactError(MCDropError):
    """A model folder is broken: bad manifest, checksum mismatch, missing or misshapen tensor."""

    status_code = 500


class InactiveDropout(ArtifactError):
    """All MC passes came out identical: the model's dropout is not stochastic at serving time."""


class EngineUnavailable(ArtifactError):
    """No engine this server has can run the model folder on the device asked for."""

    status_code = 503

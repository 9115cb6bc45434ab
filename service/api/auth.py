"""Optional API keys, checked by a pure ASGI middleware before any body is read.

- Keys come from MCDROP_API_KEYS (comma-separated) and/or MCDROP_API_KEYS_FILE (one per line);
  none configured means the API is open, as before.
- A request sends one as `X-API-Key: <key>` or `Authorization: Bearer <key>`.
- Comparison is on bytes with hmac.compare_digest against every configured key (no early exit),
  so timing says nothing about which prefix matched, and a header with non-ASCII bytes is
  simply a wrong key (401), never a str/bytes TypeError (500).
- Default deny: every path needs a key except the open ones below, so a route added later is
  protected without anyone remembering to. Open: liveness/readiness (probes carry no secrets),
  V2 health (/v2/health/*), the API description (/docs, /redoc, /openapi.json and their
  scripts under /docs/assets/: it describes the API and holds no data), the review page's static
  shell (/review and its JS and CSS: a browser cannot send a header when it opens a page; the
  page holds no data and sends the reviewer's key as X-API-Key on every API call), and /metrics
  unless MCDROP_METRICS_NEED_KEY is set.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response
from service.config import Settings

MIN_KEY_LENGTH = 16  # shorter keys are guessable; refused at start-up
_OPEN_PREFIXES = ("/health/", "/v2/health/", "/docs/assets/")
_OPEN_PATHS = frozenset(
    {
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
        "/review",
        "/review/review.js",
        "/review/review.css",
    }
)


def load_api_keys(settings: Settings) -> list[bytes]:
    """The configured keys as UTF-8 bytes; ValueError names the problem (stops start-up)."""
    keys: list[str] = []
    if settings.api_keys is not None:
        keys += [k.strip() for k in settings.api_keys.get_secret_value().split(",")]
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"MCDROP_API_KEYS_FILE: cannot read '{path}' ({e})") from None
        keys += [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    keys = [k for k in keys if k]
    short = sum(1 for k in keys if len(k) < MIN_KEY_LENGTH)
    if short:
        raise ValueError(
            f"MCDROP_API_KEYS: {short} key(s) shorter than {MIN_KEY_LENGTH} characters; "
            "use long random keys "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )
    if (settings.api_keys is not None or settings.api_keys_file) and not keys:
        raise ValueError("MCDROP_API_KEYS / MCDROP_API_KEYS_FILE are set but hold no key")
    return [k.encode("utf-8") for k in keys]


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request sends, as raw header bytes: X-API-Key, else Authorization: Bearer."""
    bearer = None
    for name, value in headers:
        name = name.lower()
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                bearer = token.strip()
    return bearer


def key_matches(given: bytes | None, keys: list[bytes]) -> bool:
    """Constant time per key, and every key is compared (no early exit)."""
    if given is None:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key)
    return found


def is_open(path: str, metrics_need_key: bool) -> bool:
    if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
        return True
    return path == "/metrics" and not metrics_need_key


class ApiKeyMiddleware:
    """Answers 401 to requests for protected paths without a configured key."""

    def __init__(self, app: ASGIApp, keys: list[bytes], metrics_need_key: bool) -> None:
        self.app = app
        self.keys = keys
        self.metrics_need_key = metrics_need_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.keys
            or is_open(str(scope.get("path", "")), self.metrics_need_key)
            or key_matches(presented_key(scope.get("headers", [])), self.keys)
        ):
            await self.app(scope, receive, send)
            return
        request_id = str(scope.get("state", {}).get("request_id", ""))
        response = error_response(
            401,
            "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
            (),
            request_id,
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="mcdrop"'
        await response(scope, receive, send)


__all__ = ["ApiKeyMiddleware", "key_matches", "load_api_keys", "presented_key"]

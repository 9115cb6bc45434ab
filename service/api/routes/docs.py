"""The API description: /openapi.json, Swagger UI at /docs and ReDoc at /redoc, with no CDN.

FastAPI's own pages load their scripts from a CDN, so on a network without internet access
/docs is blank. Here the scripts and styles are served from the package (static/vendor, with
their licences and where they came from in static/vendor/SOURCES). These are ordinary API
routes, so /metrics labels them by path like any other, rather than as unmatched.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

router = APIRouter(include_in_schema=False)

VENDOR = Path(__file__).resolve().parent.parent / "static" / "vendor"
ASSETS_PATH = "/docs/assets"
# Served by name from a fixed list: nothing else under the package can be asked for.
ASSETS = {
    "swagger-ui-bundle.js": (VENDOR / "swagger-ui" / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (VENDOR / "swagger-ui" / "swagger-ui.css", "text/css"),
    "favicon.png": (VENDOR / "swagger-ui" / "favicon-32x32.png", "image/png"),
    "redoc.standalone.js": (VENDOR / "redoc" / "redoc.standalone.js", "text/javascript"),
}
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# Only this origin: ReDoc shows a logo from its vendor's CDN, which offline would be a request
# that can only fail; the policy stops the browser from trying. Both pages set their styles
# inline, Swagger UI also its start-up script, and ReDoc searches in a blob: worker.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' {scripts}; worker-src 'self' blob:; base-uri 'none'; "
    "frame-ancestors 'none'"
)


@router.get("/openapi.json")
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    page = get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
    )
    page.headers["Content-Security-Policy"] = _CSP.format(scripts="'unsafe-inline'")
    return page


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = str(request.scope.get("root_path", "")).rstrip("/")
    page = get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,  # a font CDN is still a CDN
    )
    page.headers["Content-Security-Policy"] = _CSP.format(scripts="")
    return page


@router.get(ASSETS_PATH + "/{name}")
async def asset(name: str) -> FileResponse:
    found = ASSETS.get(name)
    if found is None:
        raise HTTPException(404, f"no documentation asset named '{name[:64]}'")
    path, media_type = found
    # The files change only with the package: let browsers keep them for a day.
    headers = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}
    return FileResponse(path, media_type=media_type, headers=headers)

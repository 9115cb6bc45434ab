"""GET /review: the reviewers' page. Static HTML, CSS and JavaScript, no build step.

The page holds no data and no secrets: it calls the review API from the browser, sending the
X-API-Key the reviewer typed (kept in sessionStorage), so the API's own key check protects the
data. The page itself is therefore safe to serve without a key; its Content-Security-Policy
allows only this origin's script and API.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(tags=["review"], include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static"

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_FILES = {
    "review.js": "text/javascript; charset=utf-8",
    "review.css": "text/css; charset=utf-8",
}


@router.get("/review")
async def review_page() -> FileResponse:
    """The review page."""
    return FileResponse(
        STATIC / "review.html", media_type="text/html; charset=utf-8", headers=_HEADERS
    )


@router.get("/review/review.js")
async def review_script() -> FileResponse:
    return FileResponse(STATIC / "review.js", media_type=_FILES["review.js"], headers=_HEADERS)


@router.get("/review/review.css")
async def review_style() -> FileResponse:
    return FileResponse(STATIC / "review.css", media_type=_FILES["review.css"], headers=_HEADERS)

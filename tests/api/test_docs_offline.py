"""/docs and /redoc work with no internet: their scripts come from the package, with licences.

The browser test opens /docs and /redoc in headless Chromium with every request that is not to
the local server aborted, and checks that the operations are listed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Route

from service.api.routes.docs import ASSETS, VENDOR
from tests.conftest import REPO
from tests.servers import serving

pytestmark = pytest.mark.anyio

STATIC = VENDOR.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
]


def _urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_pages_load_nothing_from_another_host(client: httpx.AsyncClient, page: str) -> None:
    r = await client.get(page)
    assert r.status_code == 200
    urls = _urls(r.text)
    assert any(u.startswith("/docs/assets/") for u in urls), urls
    assert not [u for u in urls if "//" in u], "a script or style from another host"
    for url in urls:
        assert (await client.get(url)).status_code == 200, url


async def test_assets_are_served_with_their_types_and_nothing_else(
    client: httpx.AsyncClient,
) -> None:
    for name, (path, media_type) in ASSETS.items():
        r = await client.get(f"/docs/assets/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media_type)
        assert r.content == path.read_bytes()
    assert (await client.get("/docs/assets/SOURCES")).status_code == 404
    assert (await client.get("/docs/assets/..%2F..%2Freview.html")).status_code == 404


def test_vendored_files_match_their_recorded_checksums_and_keep_their_licences() -> None:
    sources = (VENDOR / "SOURCES").read_text()
    recorded = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", sources, re.M)
    )
    files = sorted(str(p.relative_to(VENDOR)) for p in VENDOR.glob("*/*"))
    assert sorted(recorded) == files  # every file listed, none missing
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    for folder in ("swagger-ui", "redoc"):
        assert (
            "Permission" in (VENDOR / folder / "LICENSE").read_text()
            or "Apache" in (VENDOR / folder / "LICENSE").read_text()
        )


def test_package_data_ships_every_static_file() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["service"]
    package = REPO / "service"
    for path in STATIC.rglob("*"):
        if path.is_file():
            rel = str(path.relative_to(package))
            # setuptools' "*" does not cross "/", like fnmatch on each pattern's depth.
            assert any(
                fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/") for p in patterns
            ), f"{rel} is not package data"


async def test_docs_routes_are_labelled_in_metrics(client: httpx.AsyncClient) -> None:
    def unmatched(text: str) -> float:
        found = re.findall(r'mcdrop_requests_total\{[^}]*route="unmatched"[^}]*\} (\S+)', text)
        return sum(float(v) for v in found)

    before = unmatched((await client.get("/metrics")).text)
    for path in (
        "/docs",
        "/redoc",
        "/openapi.json",
        "/docs/assets/swagger-ui.css",
        "/docs/oauth2-redirect",
    ):
        assert (await client.get(path)).status_code == 200
    text = (await client.get("/metrics")).text
    assert unmatched(text) == before
    for route in ("/docs", "/redoc", "/openapi.json", "/docs/assets/{name}"):
        assert f'route="{route}"' in text, route


@pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install chromium)")
@pytest.mark.timeout(180)
def test_docs_and_redoc_list_the_operations_with_the_network_blocked(
    tiny_regression_dir: Path, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    models = tmp_path / "models"
    shutil.copytree(tiny_regression_dir, models / "tiny_reg")
    # MCDROP_TEST_SCREENSHOTS=folder keeps the screenshots, to look at the pages.
    shots = Path(os.environ.get("MCDROP_TEST_SCREENSHOTS", tmp_path / "shots"))
    with serving(models, tmp_path) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            blocked: list[str] = []
            problems: list[str] = []

            def only_local(route: Route) -> None:
                if route.request.url.startswith(base):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.on("pageerror", lambda e: problems.append(str(e)))
            refused: list[str] = []  # what the pages' content security policy stopped
            page.on("console", lambda m: refused.append(m.text) if m.type == "error" else None)

            page.goto(f"{base}/docs")
            page.locator(".opblock").first.wait_for(timeout=30_000)
            listed = page.locator(".opblock-summary-path").evaluate_all(
                "els => els.map(e => e.dataset.path)"
            )
            assert {"/predict", "/v1/models/{name}/predict", "/health/ready"} <= set(listed)
            page.screenshot(path=str(shots / "docs.png"))

            page.goto(f"{base}/redoc")
            page.locator("h2", has_text="Predict Default").first.wait_for(timeout=30_000)
            operations = page.locator("[data-section-id^='operation/']")
            assert operations.count() >= len(set(listed))
            page.screenshot(path=str(shots / "redoc.png"))
            assert problems == []
            assert blocked == []  # nothing even tried to leave the machine
            # Only ReDoc's vendor logo is refused (it hides itself when it cannot load).
            assert all("cdn.redoc.ly" in text for text in refused), refused
        finally:
            browser.close()

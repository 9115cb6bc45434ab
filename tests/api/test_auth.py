"""API keys: who gets in, in which header, and which paths stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.api.app import create_app
from service.api.auth import key_matches, presented_key
from tests.api.conftest import REG_ROW, running, settings_for

pytestmark = pytest.mark.anyio

KEY = "k3y-for-tests-0123456789"
OTHER = "another-key-abcdefghijk"
PREDICT = "/v1/models/tiny_reg/predict"


@pytest.fixture(scope="module")
async def keyed(serving_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(serving_dir, api_keys=f"{KEY}, {OTHER}"))
    async with running(app) as c:
        yield c


async def test_protected_routes_need_a_key(keyed: httpx.AsyncClient) -> None:
    for r in (
        await keyed.post(PREDICT, json={"inputs": [REG_ROW]}),
        await keyed.get("/v1/models"),
        await keyed.post("/v1/admin/reload"),
        await keyed.get("/v1/referrals"),
        await keyed.post("/v2/models/tiny_reg/infer", json={}),
        await keyed.get("/v2/models/tiny_reg"),
        await keyed.get("/some/future/route"),  # default deny, even for unknown paths
    ):
        assert r.status_code == 401, r.text
        assert set(r.json()) == {"error", "detail"}
        assert r.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {OTHER}"}],
)
async def test_either_header_and_any_configured_key_gets_in(
    keyed: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    r = await keyed.post(PREDICT, json={"inputs": [REG_ROW]}, headers=headers)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEY[:-1]},
        {"X-API-Key": KEY + "x"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
        {"X-API-Key": ""},
    ],
)
async def test_wrong_keys_are_401(keyed: httpx.AsyncClient, headers: dict[str, str]) -> None:
    assert (await keyed.get("/v1/models", headers=headers)).status_code == 401


async def test_non_ascii_key_is_401_not_500(keyed: httpx.AsyncClient) -> None:
    for raw in ("clé-secrète-ünïcode-0123".encode(), b"\xff\xfe\x00bad"):
        r = await keyed.get("/v1/models", headers=[(b"x-api-key", raw)])
        assert r.status_code == 401, r.text
        r = await keyed.get("/v1/models", headers=[(b"authorization", b"Bearer " + raw)])
        assert r.status_code == 401, r.text


async def test_health_docs_and_metrics_stay_open(keyed: httpx.AsyncClient) -> None:
    for path in (
        "/health/live",
        "/health/ready",
        "/v2/health/live",
        "/v2/health/ready",
        "/docs",
        "/openapi.json",
        "/metrics",
        "/review",  # the page's static shell; its API calls send the reviewer's key
        "/review/review.js",
    ):
        assert (await keyed.get(path)).status_code == 200, path


async def test_metrics_can_be_protected(serving_dir: Path) -> None:
    app = create_app(settings_for(serving_dir, api_keys=KEY, metrics_need_key=True))
    async with running(app) as c:
        assert (await c.get("/metrics")).status_code == 401
        assert (await c.get("/metrics", headers={"X-API-Key": KEY})).status_code == 200
        assert (await c.get("/health/ready")).status_code == 200


async def test_keys_from_a_file(serving_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# operators\n\n{KEY}\n")
    app = create_app(settings_for(serving_dir, api_keys_file=str(keys)))
    async with running(app) as c:
        assert (await c.get("/v1/models")).status_code == 401
        assert (await c.get("/v1/models", headers={"X-API-Key": KEY})).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"api_keys": "short"}, "shorter than"), ({"api_keys": " , "}, "hold no key")],
)
def test_weak_or_empty_keys_stop_start_up(
    serving_dir: Path, kwargs: dict[str, str], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        create_app(settings_for(serving_dir, **kwargs))


def test_unreadable_key_file_stops_start_up(serving_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MCDROP_API_KEYS_FILE"):
        create_app(settings_for(serving_dir, api_keys_file=str(tmp_path / "missing")))


def test_key_matching_on_bytes() -> None:
    keys = [KEY.encode()]
    assert key_matches(KEY.encode(), keys)
    assert not key_matches(None, keys) and not key_matches(b"", keys)
    assert not key_matches("é".encode(), keys)  # bytes compare: no TypeError on non-ASCII
    assert presented_key([(b"Authorization", b"Bearer  tok ")]) == b"tok"
    assert presented_key([(b"authorization", b"Bearer a"), (b"x-api-key", b"b")]) == b"b"

"""The review API over HTTP: paging, claims, resolutions and its 404/409/422/503 answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.config import Settings
from tests.api.conftest import running
from tests.referrals.conftest import clf_row, minutes, reg_row

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(
    tmp_path: Path, tiny_regression_dir: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    s = Settings(
        model_dir=str(tiny_regression_dir.parent),
        database_url=f"sqlite:///{tmp_path / 'r.db'}",
        referral_spool=str(tmp_path / "spool.jsonl"),
    )
    app = create_app(s)
    async with running(app) as c:
        yield app, c


def seed(app: FastAPI, *rows: dict[str, Any]) -> list[str]:
    ids: list[str] = app.state.referrals.store.add(list(rows))
    return ids


async def test_listing_pages_newest_first(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = api
    ids = seed(app, *(clf_row(created_at=minutes(i)) for i in range(5)), reg_row())
    first = (await c.get("/v1/referrals", params={"model": "clf", "limit": 2})).json()
    assert [i["id"] for i in first["items"]] == [ids[4], ids[3]]
    assert (first["total"], first["next_offset"]) == (5, 2)
    last = (await c.get("/v1/referrals", params={"model": "clf", "limit": 2, "offset": 4})).json()
    assert [i["id"] for i in last["items"]] == [ids[0]] and last["next_offset"] is None
    bad = await c.get("/v1/referrals", params={"status": "open", "limit": 0})
    assert bad.status_code == 422
    assert {tuple(d["loc"]) for d in bad.json()["detail"]} == {
        ("query", "status"),
        ("query", "limit"),
    }


async def test_claim_then_resolve_then_conflict(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = api
    (rid,) = seed(app, clf_row())
    r = await c.post(f"/v1/referrals/{rid}/claim", json={"reviewer": "ann", "lease_s": 600})
    assert r.status_code == 200 and r.json()["claimed_by"] == "ann"
    assert (await c.get("/v1/referrals", params={"reviewer": "bob"})).json()["total"] == 0
    r = await c.post(f"/v1/referrals/{rid}/claim", json={"reviewer": "bob"})
    assert r.status_code == 409 and "claimed by ann" in r.json()["error"]
    r = await c.post(
        f"/v1/referrals/{rid}/resolve", json={"reviewer": "ann", "label": "eel", "note": "fins"}
    )
    assert r.status_code == 200
    assert r.json()["resolution"] | {"resolved_at": None} == {
        "reviewer": "ann",
        "label": 2,
        "class_label": "eel",
        "value": None,
        "note": "fins",
        "resolved_at": None,
    }
    again = await c.post(f"/v1/referrals/{rid}/resolve", json={"reviewer": "ann", "label": 1})
    assert again.status_code == 409 and "already resolved" in again.json()["error"]
    listed = (await c.get("/v1/referrals", params={"status": "resolved"})).json()
    assert [i["id"] for i in listed["items"]] == [rid]


async def test_regression_takes_a_bare_number(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, c = api
    (rid,) = seed(app, reg_row())
    r = await c.post(f"/v1/referrals/{rid}/resolve", json={"reviewer": "ann", "value": 12})
    assert r.status_code == 200 and r.json()["resolution"]["value"] == [12.0]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"label": 1}, ["reviewer"]),
        ({"reviewer": "", "label": 1}, ["reviewer"]),
        ({"reviewer": "a\nb", "label": 1}, ["reviewer"]),
        ({"reviewer": "ann", "label": 1, "extra": 1}, ["extra"]),
        ({"reviewer": "ann", "label": 7}, ["label"]),
        ({"reviewer": "ann", "label": True}, ["label"]),  # JSON true is not class 1
        ({"reviewer": "ann"}, ["label"]),
        ({"reviewer": "ann", "value": [1.0]}, ["value"]),
    ],
)
async def test_bad_answers_are_422_naming_the_field(
    api: tuple[FastAPI, httpx.AsyncClient], body: dict[str, Any], loc: list[str]
) -> None:
    app, c = api
    (rid,) = seed(app, clf_row())
    r = await c.post(f"/v1/referrals/{rid}/resolve", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][: len(loc)] == loc
    assert (await c.get(f"/v1/referrals/{rid}")).json()["status"] == "pending"


async def test_unknown_ids_are_404(api: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, c = api
    assert (await c.get("/v1/referrals/deadbeef")).status_code == 404
    r = await c.post("/v1/referrals/deadbeef/claim", json={"reviewer": "ann"})
    assert r.status_code == 404 and "no referral with id 'deadbeef'" in r.json()["error"]
    r = await c.post("/v1/referrals/deadbeef/resolve", json={"reviewer": "ann", "label": 0})
    assert r.status_code == 404


async def test_the_review_page_is_served_with_a_strict_policy(
    api: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, c = api
    page = await c.get("/review")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'src="review/review.js"' in page.text
    js = await c.get("/review/review.js")
    assert js.status_code == 200 and ".innerHTML" not in js.text  # data goes in as text only


async def test_disabled_referrals_serve_no_review_routes(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    s = Settings(model_dir=str(tiny_regression_dir.parent), referrals=False)
    async with running(create_app(s)) as c:
        assert (await c.get("/v1/referrals")).status_code == 404
        assert (await c.get("/review")).status_code == 404
        r = await c.post(
            "/v1/models/tiny_reg/predict", json={"inputs": [[0, 0, 0]], "threshold": -1}
        )
        assert r.json()["predictions"][0]["referral_id"] is None

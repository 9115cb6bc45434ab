"""Every error status: 404, 413, 422, 500, 503, all as {"error": ..., "detail": [...]}."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.app import create_app
from tests.api.conftest import CLF_ROW, REG_ROW, running, settings_for

pytestmark = pytest.mark.anyio

REG = "/v1/models/tiny_reg/predict"


def assert_error_shape(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "detail"}
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["detail"], list)
    assert r.headers["x-request-id"]
    return body


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    body = assert_error_shape(
        await client.post("/v1/models/nope/predict", json={"inputs": [REG_ROW]}), 404
    )
    assert "nope" in body["error"] and "tiny_reg" in body["error"]  # says what exists
    assert_error_shape(
        await client.post("/predict", json={"model": "nope", "inputs": [REG_ROW]}), 404
    )
    assert_error_shape(await client.get("/v1/models/nope"), 404)
    assert_error_shape(await client.get("/v1/models/..%2F..%2Fetc"), 404)


async def test_unknown_route_and_method_use_the_error_shape(client: httpx.AsyncClient) -> None:
    assert_error_shape(await client.get("/nowhere"), 404)
    assert_error_shape(await client.get("/predict"), 405)


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ('{"inputs": [[NaN, 0, 0]]}', ["inputs", 0, 0]),
        ('{"inputs": [[0, Infinity, 0]]}', ["inputs", 0, 1]),
        ('{"inputs": [[0, 0, -Infinity]]}', ["inputs", 0, 2]),
        ('{"inputs": [[1e400, 0, 0]]}', ["inputs", 0, 0]),
        ('{"inputs": [[true, 0, 0]]}', ["inputs", 0, 0]),
        ('{"inputs": [[0, "1.5", 0]]}', ["inputs", 0, 1]),
        ('{"inputs": [[0, 0, null]]}', ["inputs", 0, 2]),
        ('{"inputs": [1, 2, 3]}', ["inputs"]),
        ('{"inputs": []}', ["inputs"]),
        ('{"inputs": [[1, 2, 3]], "samples": 1.5}', ["samples"]),
        ('{"inputs": [[1, 2, 3]], "samples": true}', ["samples"]),
        ('{"inputs": [[1, 2, 3]], "seed": -1}', ["seed"]),
        ('{"inputs": [[1, 2, 3]], "threshold": NaN}', ["threshold"]),
        ('{"inputs": [[1, 2, 3]], "return_samples": "yes"}', ["return_samples"]),
        ('{"inputs": [[1, 2, 3]], "sample": 10}', ["sample"]),
        ('{"inputs": [[1, 2, 3]]', ["body"]),
    ],
)
async def test_malformed_values_are_422_naming_the_field(
    client: httpx.AsyncClient, raw: str, loc: list[Any]
) -> None:
    r = await client.post(REG, content=raw, headers={"content-type": "application/json"})
    body = assert_error_shape(r, 422)
    if loc:
        assert body["detail"][0]["loc"] == loc
        assert body["error"].startswith(".".join(str(p) for p in loc))
    for d in body["detail"]:
        assert set(d) == {"loc", "msg", "type"}  # no "input" or "ctx" echo


@pytest.mark.parametrize(
    ("rows", "message", "loc"),
    [
        ([REG_ROW, [1.0, 2.0]], "inputs: row 1 has 2 values, expected 3", ["inputs", 1]),
        ([[1.0], REG_ROW, REG_ROW], "inputs: row 0 has 1 value, expected 3", ["inputs", 0]),
    ],
)
async def test_ragged_rows_name_the_row_and_the_width(
    client: httpx.AsyncClient, rows: list[Any], message: str, loc: list[Any]
) -> None:
    body = assert_error_shape(await client.post(REG, json={"inputs": rows}), 422)
    assert body["error"].startswith(message)
    assert body["detail"][0]["loc"] == loc
    assert "inhomogeneous" not in body["error"] and "sequence" not in body["error"]  # no numpy


async def test_ragged_images_name_the_row_and_its_shape(client: httpx.AsyncClient) -> None:
    image = [[[0.0] * 4] * 4]  # tiny_img takes 1×4×4
    short = [[[0.0] * 4] * 3]
    r = await client.post("/v1/models/tiny_img/predict", json={"inputs": [image, short]})
    body = assert_error_shape(r, 422)
    assert body["error"] == "inputs: row 1 has shape [1, 3, 4], expected [1, 4, 4] (or 16 values)"


async def test_a_flat_row_is_one_error_saying_to_wrap_it(client: httpx.AsyncClient) -> None:
    body = assert_error_shape(await client.post(REG, json={"inputs": REG_ROW}), 422)
    assert body["error"] == "inputs: must be a list of rows; wrap a single row as [[...]]"
    assert len(body["detail"]) == 1  # one mistake, not one complaint per value


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_not_sent_as_json_says_which_content_type(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    raw = json.dumps({"inputs": [REG_ROW]})
    r = await client.post(REG, content=raw, headers=headers)
    assert "content-type" not in r.request.headers or content_type
    body = assert_error_shape(r, 422)
    assert body["error"] == "body: send JSON with content-type: application/json"
    # The same body with the header is fine.
    ok = await client.post(REG, content=raw, headers={"content-type": "application/json"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("value", "said"),
    [(True, "not true or false"), ("1.5", "not a string"), (None, "not null"), ([1], "not a list")],
)
async def test_a_non_number_value_says_a_finite_number_is_expected(
    client: httpx.AsyncClient, value: Any, said: str
) -> None:
    body = assert_error_shape(await client.post(REG, json={"inputs": [[0.0, value, 0.0]]}), 422)
    assert body["error"].startswith(f"inputs.0.1: expected a finite number, {said}")
    assert body["detail"][0]["loc"] == ["inputs", 0, 1]


@pytest.mark.parametrize(
    ("req", "field", "words"),
    [
        ({"inputs": [[1.0, 2.0]]}, "inputs", "[3]"),  # too narrow: names the expected shape
        ({"inputs": [[[1.0, 2.0, 3.0]]]}, "inputs", "[3]"),  # too deep
        ({"inputs": [REG_ROW], "samples": 1}, "samples", "[2, 10000]"),
        ({"inputs": [REG_ROW], "samples": 10_001}, "samples", "[2, 10000]"),
        ({"inputs": [REG_ROW], "uncertainty_metric": "entropy"}, "uncertainty_metric", "std"),
        ({"inputs": [[1e300, 1e300, 1e300]]}, "inputs", "too large"),
    ],
)
async def test_model_level_problems_are_422(
    client: httpx.AsyncClient, req: dict[str, Any], field: str, words: str
) -> None:
    body = assert_error_shape(await client.post(REG, json=req), 422)
    assert body["error"].startswith(f"{field}: ")
    assert words in body["error"]
    assert body["detail"][0]["loc"] == [field]


async def test_large_bad_input_is_not_echoed(client: httpx.AsyncClient) -> None:
    marker = "SECRET-VALUE-" + "x" * 50
    rows = [[marker, 0.0, 0.0] for _ in range(2000)]
    r = await client.post(REG, json={"inputs": rows})
    assert_error_shape(r, 422)
    assert marker not in r.text
    assert len(r.content) < 5000  # the first 20 problems, not 2000


async def test_rows_over_the_limit_are_422(serving_dir: Path) -> None:
    async with running(create_app(settings_for(serving_dir, max_rows=4))) as c:
        body = assert_error_shape(await c.post(REG, json={"inputs": [REG_ROW] * 5}), 422)
        assert "at most 4 rows" in body["error"]
        assert (await c.post(REG, json={"inputs": [REG_ROW] * 4})).status_code == 200


async def test_server_cap_on_samples_and_returned_values(serving_dir: Path) -> None:
    settings = settings_for(serving_dir, max_samples=50, max_returned_values=100)
    async with running(create_app(settings)) as c:
        body = assert_error_shape(await c.post(REG, json={"inputs": [REG_ROW], "samples": 51}), 422)
        assert "[2, 50]" in body["error"]
        ok = await c.post(REG, json={"inputs": [REG_ROW]})  # default 100 is capped to 50
        assert ok.status_code == 200 and ok.json()["samples"] == 50
        req = {"inputs": [REG_ROW] * 3, "samples": 40, "return_samples": True}  # 120 values
        body = assert_error_shape(await c.post(REG, json=req), 422)
        assert body["detail"][0]["loc"] == ["return_samples"]


async def _chunks(total: int, size: int = 4096) -> AsyncIterator[bytes]:
    yield b'{"inputs": [[1, 2, 3]], "pad": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


async def test_body_over_limit_is_413(serving_dir: Path) -> None:
    async with running(create_app(settings_for(serving_dir, max_body_bytes=2048))) as c:
        big = json.dumps({"inputs": [REG_ROW] * 200}).encode()
        r = await c.post(REG, content=big, headers={"content-type": "application/json"})
        assert "2048" in assert_error_shape(r, 413)["error"]
        # Chunked: no Content-Length, so only counting the streamed bytes can catch it.
        r = await c.post(REG, content=_chunks(10_000), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        assert_error_shape(r, 413)
        # A small chunked body passes the limit (and then fails on the unknown field, 422).
        r = await c.post(
            REG, content=_chunks(1000, size=100), headers={"content-type": "application/json"}
        )
        assert r.status_code == 422


async def test_broken_model_is_503_with_reason(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/models/broken/predict", json={"inputs": [REG_ROW]})
    body = assert_error_shape(r, 503)
    assert "SHA-256 mismatch" in body["error"]
    # The others keep serving.
    assert (await client.post("/v1/models/tiny_clf/predict", json={"inputs": [CLF_ROW]})).is_success


async def test_not_loaded_yet_is_503(serving_dir: Path) -> None:
    app = create_app(settings_for(serving_dir))
    transport = httpx.ASGITransport(app=app)  # no lifespan: models never load
    async with httpx.AsyncClient(transport=transport, base_url="http://mcdrop") as c:
        assert_error_shape(await c.post("/predict", json={"inputs": [REG_ROW]}), 503)
        assert_error_shape(await c.post(REG, json={"inputs": [REG_ROW]}), 503)
        assert_error_shape(await c.get("/v1/models"), 503)


async def test_unexpected_error_is_500_without_internals(
    serving_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings_for(serving_dir))

    async def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal state /etc/passwd")

    async with running(app) as c:
        monkeypatch.setattr(app.state.predictor, "infer", explode)
        with caplog.at_level(logging.ERROR, logger="mcdrop"):
            r = await c.post(REG, json={"inputs": [REG_ROW]}, headers={"X-Request-ID": "req-77"})
    body = assert_error_shape(r, 500)
    assert "secret" not in r.text and "Traceback" not in r.text
    assert "req-77" in body["error"] and r.headers["x-request-id"] == "req-77"
    assert any("req-77" in rec.getMessage() and rec.exc_info for rec in caplog.records)


async def test_request_id_is_echoed_or_generated(client: httpx.AsyncClient) -> None:
    r = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"
    assert len(r.headers["x-request-id"]) == 32


def test_generated_request_ids_are_unique_hex_like_uuid4() -> None:
    from service.api.middleware import new_request_id

    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)

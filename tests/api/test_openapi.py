"""/docs and the OpenAPI document: every field described, error responses documented."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_docs_page(client: httpx.AsyncClient) -> None:
    r = await client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()


async def test_every_schema_field_is_described(client: httpx.AsyncClient) -> None:
    spec: dict[str, Any] = (await client.get("/openapi.json")).json()
    ours = [
        "PredictRequest",
        "DefaultPredictRequest",
        "PredictResponse",
        "RegressionPrediction",
        "ClassificationPrediction",
        "ModelPublic",
        "ModelList",
        "Readiness",
        "Liveness",
        "ErrorResponse",
        "ErrorDetail",
    ]
    schemas = spec["components"]["schemas"]
    for name in ours:
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"


async def test_error_responses_are_documented(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/predict", "/v1/models/{name}/predict"):
        responses = paths[path]["post"]["responses"]
        assert {"200", "404", "413", "422", "500", "503"} <= set(responses)
        assert responses["422"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
    assert "503" in paths["/health/ready"]["get"]["responses"]

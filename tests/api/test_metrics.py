"""GET /metrics: counts that follow from the requests a test makes, on a fresh app."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.api.app import create_app
from tests.api.conftest import CLF_ROW, REG_ROW, running, settings_for

pytestmark = pytest.mark.anyio


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, matching all the given labels."""
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            return float(m.group(2))
    raise AssertionError(f"no sample {name} {labels}")


async def test_metrics_count_requests_samples_and_abstentions(serving_dir: Path) -> None:
    async with running(create_app(settings_for(serving_dir))) as c:
        reg_route = "/v1/models/{name}/predict"
        r1 = await c.post(
            "/v1/models/tiny_reg/predict",
            json={"inputs": [REG_ROW] * 3, "samples": 10, "threshold": -1.0},  # all abstain
        )
        r2 = await c.post(
            "/v1/models/tiny_reg/predict",
            json={"inputs": [REG_ROW] * 2, "samples": 20, "threshold": 1e9},  # none abstain
        )
        r3 = await c.post("/predict", json={"model": "tiny_clf", "inputs": [CLF_ROW]})
        bad = await c.post("/v1/models/tiny_reg/predict", json={"inputs": [[1.0]]})
        unknown = await c.post("/v1/models/zzz/predict", json={"inputs": [[1.0]]})
        assert [r.status_code for r in (r1, r2, r3, bad, unknown)] == [200, 200, 200, 422, 404]
        r = await c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    labels = {"route": reg_route, "model": "tiny_reg"}
    assert sample(text, "mcdrop_requests_total", **labels, status="200") == 2
    assert sample(text, "mcdrop_requests_total", **labels, status="422") == 1
    # An unknown name gets no label of its own (clients must not grow the label set).
    assert sample(text, "mcdrop_requests_total", route=reg_route, model="", status="404") == 1
    assert sample(text, "mcdrop_request_duration_seconds_count", **labels, status="200") == 2
    assert sample(text, "mcdrop_mc_samples_total", model="tiny_reg") == 3 * 10 + 2 * 20
    assert sample(text, "mcdrop_predictions_total", model="tiny_reg") == 5
    assert sample(text, "mcdrop_abstentions_total", model="tiny_reg") == 3
    assert sample(text, "mcdrop_uncertainty_count", model="tiny_reg") == 5
    assert sample(text, "mcdrop_mc_samples_total", model="tiny_clf") == 100
    assert sample(text, "mcdrop_model_ready", model="broken") == 0
    assert sample(text, "mcdrop_model_ready", model="tiny_reg") == 1


async def test_each_app_has_its_own_registry(serving_dir: Path) -> None:
    a, b = create_app(settings_for(serving_dir)), create_app(settings_for(serving_dir))
    async with running(a) as ca, running(b) as cb:
        await ca.post("/v1/models/tiny_reg/predict", json={"inputs": [REG_ROW], "samples": 5})
        text_b = (await cb.get("/metrics")).text
        text_a = (await ca.get("/metrics")).text
    assert sample(text_a, "mcdrop_mc_samples_total", model="tiny_reg") == 5
    assert "mcdrop_mc_samples_total{" not in text_b

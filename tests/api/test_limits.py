"""Input limits on raw text (what schemathesis does not generate), overflow rows, and admission
control seen over HTTP: 503 with Retry-After when full, 504 past the deadline, health open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.api.app import create_app
from service.config import Settings
from service.engines.base import SampleJob
from service.serving.finite import OVERFLOW_REASON
from service.serving.model import MCDropoutModel
from service.serving.summary import SummarySpec, summarize_many
from tests.api.conftest import REG_ROW, running, settings_for
from tests.helpers import linear_model_dir

pytestmark = pytest.mark.anyio

REG = "/v1/models/tiny_reg/predict"


async def _raw(c: httpx.AsyncClient, text: str) -> httpx.Response:
    return await c.post(REG, content=text, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    "text",
    [
        '{"inputs": [[NaN, 0, 0]]}',
        '{"inputs": [[0, -Infinity, 0]]}',
        '{"inputs": [[0, 0, Infinity]]}',
        '{"inputs": [[1e400, 0, 0]]}',
        '{"inputs": [[-1e999999999, 0, 0]]}',
        '{"inputs": [[0, 0, 0]], "threshold": 1e309}',
        '{"inputs": [["NaN", 0, 0]]}',
        '{"inputs": [["Infinity", 0, 0]]}',
        '{"inputs": [[false, 0, 0]]}',
        '{"inputs": [[0, 0, 0]], "samples": 1e2}',
        '{"inputs": [[0, 0, 0]], "timeout_ms": 0}',
        '{"inputs": [[0, 0, 0]], "timeout_ms": true}',
        '{"inputs": [[0, 0]]}',  # a feature short
        '{"inputs": [[0, 0, 0, 0]]}',  # a feature too many
        '{"inputs": [' + "[" * 40 + "0" + "]" * 40 + "]}",  # nested deeper than any input shape
        '{"inputs": ' + "[" * 100_000 + "]" * 100_000 + "}",  # deeper than the parser goes
        '{"a":' * 50_000 + "1" + "}" * 50_000,
    ],
)
async def test_raw_text_cases_are_422_without_echo(client: httpx.AsyncClient, text: str) -> None:
    r = await _raw(client, text)
    assert r.status_code == 422, r.text[:300]
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"]
    assert len(r.content) < 2000  # never the input back


async def test_samples_times_rows_over_the_cap_is_422(serving_dir: Path) -> None:
    app = create_app(settings_for(serving_dir, max_sample_rows=1000, max_inflight_sample_rows=1000))
    async with running(app) as c:
        r = await c.post(REG, json={"inputs": [REG_ROW] * 10, "samples": 101})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["samples"]
        assert (await c.post(REG, json={"inputs": [REG_ROW] * 10, "samples": 100})).is_success


async def test_overflowing_row_abstains_with_a_reason(tmp_path: Path) -> None:
    """w = 1e30: x = 1e10 gives 1e40, past float32 (3.4e38), while x = 1e-30 stays finite."""
    linear_model_dir(tmp_path / "huge", np.array([1e30, 1e30]), bias=0.0, input_rate=0.5)
    app = create_app(Settings(model_dir=str(tmp_path)))
    async with running(app) as c:
        r = await c.post(
            "/v1/models/huge/predict",
            json={"inputs": [[1e-30, 0.0], [1e10, 1e10]], "seed": 0, "return_samples": True},
        )
    assert r.status_code == 200, r.text
    text = r.text
    assert (
        "NaN" not in text
        and "Infinity" not in text
        and "null," not in text.replace('"reason":null,', "")
    )
    good, bad = r.json()["predictions"]
    assert good["reason"] is None
    assert bad["abstain"] is True and bad["reason"] == OVERFLOW_REASON
    assert all(np.isfinite(v) for v in bad["mean"] + bad["variance"] + [bad["uncertainty"]])
    assert np.isfinite(np.asarray(r.json()["raw_samples"])).all()


class _BlockedRunner:
    """Holds every job until released, so a test controls how much work is in flight."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self.release.set()

    async def sample(self, model: MCDropoutModel, job: SampleJob) -> Any:
        self.started += 1
        await self.release.wait()
        return model.engine.sample_many([job])[0]

    async def predict(self, model: MCDropoutModel, job: SampleJob, spec: SummarySpec) -> Any:
        raw = await self.sample(model, job)
        out = summarize_many(model, [raw], [job.seed], [spec])[0]
        if isinstance(out, BaseException):
            raise out
        return out


@pytest.fixture
async def tight(serving_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, _BlockedRunner]]:
    """Room for one request of T·N = 100 in flight and one waiting."""
    settings = settings_for(
        serving_dir, max_sample_rows=100, max_inflight_sample_rows=100, max_queued_requests=1
    )
    app = create_app(settings)
    async with running(app) as c:
        runner = _BlockedRunner()
        app.state.predictor.runner = runner
        yield c, runner


async def test_full_server_answers_503_with_retry_after_and_health_stays_open(
    tight: tuple[httpx.AsyncClient, _BlockedRunner],
) -> None:
    c, runner = tight
    body = {"inputs": [REG_ROW], "samples": 100, "seed": 1}
    running_one = asyncio.create_task(c.post(REG, json=body))
    queued_one = asyncio.create_task(c.post(REG, json=body))
    while runner.started < 1:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)  # let the second reach the queue
    refused = await c.post(REG, json=body)
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "1"
    assert "capacity" in refused.json()["error"]
    # Work is pending, yet health, readiness, metrics and model listing all answer.
    for path in ("/health/live", "/health/ready", "/metrics", "/v1/models"):
        assert (await c.get(path)).status_code == 200, path
    runner.release.set()
    done = await asyncio.gather(running_one, queued_one)
    assert [r.status_code for r in done] == [200, 200]
    assert 'status="503"' in (await c.get("/metrics")).text


async def test_deadline_gives_504_and_the_next_request_is_admitted(
    tight: tuple[httpx.AsyncClient, _BlockedRunner],
) -> None:
    c, runner = tight
    r = await c.post(REG, json={"inputs": [REG_ROW], "samples": 100, "timeout_ms": 50})
    assert r.status_code == 504, r.text
    assert "deadline" in r.json()["error"]
    runner.release.set()  # the place the timed-out request held was given back
    r = await c.post(REG, json={"inputs": [REG_ROW], "samples": 100})
    assert r.status_code == 200, r.text


async def test_draining_server_refuses_work_and_is_not_ready(serving_dir: Path) -> None:
    app = create_app(settings_for(serving_dir))
    async with running(app) as c:
        app.state.predictor.admission.drain()
        r = await c.post(REG, json={"inputs": [REG_ROW]})
        assert r.status_code == 503 and "shutting down" in r.json()["error"]
        ready = await c.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["reason"] == "shutting down"
        assert (await c.get("/health/live")).status_code == 200


def test_inflight_bound_below_the_request_cap_is_refused(serving_dir: Path) -> None:
    with pytest.raises(
        ValueError, match="MCDROP_MAX_INFLIGHT_SAMPLE_ROWS must be at least MCDROP_MAX_SAMPLE_ROWS"
    ):
        settings_for(serving_dir, max_sample_rows=1000, max_inflight_sample_rows=999)


def test_json_module_reads_the_specials_we_refuse() -> None:
    """Why the raw-text cases exist: Python's parser accepts what JSON forbids."""
    nan, inf, big = json.loads("[NaN, Infinity, 1e400]")
    assert nan != nan and inf == big == float("inf")

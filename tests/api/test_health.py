"""Liveness and readiness, and liveness while a large request computes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.app import create_app
from tests.api.conftest import REG_ROW, running, settings_for

pytestmark = pytest.mark.anyio


async def test_live_and_ready(client: httpx.AsyncClient) -> None:
    live = await client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "models": {"broken": False, "tiny_clf": True, "tiny_img": True, "tiny_reg": True},
        "reason": None,
    }


async def test_ready_is_503_before_models_load(serving_dir: Path) -> None:
    app = create_app(settings_for(serving_dir))
    transport = httpx.ASGITransport(app=app)  # lifespan not run: nothing loaded yet
    async with httpx.AsyncClient(transport=transport, base_url="http://mcdrop") as c:
        assert (await c.get("/health/live")).status_code == 200
        r = await c.get("/health/ready")
        assert (r.status_code, r.json()["status"]) == (503, "not ready")


async def test_ready_is_503_when_no_model_loads(serving_dir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(serving_dir / "broken", tmp_path / "broken")
    from service.config import Settings

    async with running(create_app(Settings(model_dir=str(tmp_path)))) as c:
        r = await c.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["models"] == {"broken": False}
        assert r.json()["reason"] == "none of the 1 model folders loaded; each says why"


async def test_ready_gives_a_reason_when_no_model_folder_is_found(tmp_path: Path) -> None:
    from service.config import Settings

    (tmp_path / "empty").mkdir()
    async with running(create_app(Settings(model_dir=str(tmp_path / "empty")))) as c:
        r = await c.get("/health/ready")
        assert r.status_code == 503
        assert r.json()["models"] == {}
        assert "no model folders under" in r.json()["reason"]
        assert "model.json" in r.json()["reason"]  # says what a model folder holds


async def test_a_model_folder_as_the_model_directory_names_its_parent(
    serving_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from service.config import Settings

    one = Path(shutil.copytree(serving_dir / "tiny_reg", tmp_path / "models" / "toy"))
    async with running(create_app(Settings(model_dir=str(one)))) as c:
        r = await c.get("/health/ready")
        assert r.status_code == 503
        reason = r.json()["reason"]
        assert f"'{one}' is one model's folder" in reason
        assert f"--model-dir {one.parent}" in reason


async def test_live_answers_while_a_request_computes(serving_dir: Path) -> None:
    """The MC work runs in the runner's thread: hold it there and probe liveness meanwhile.

    If inference ran on the event loop, /health/live could not answer until the held job
    finished, and the job only finishes once liveness has answered: the test would time out.
    """
    app = create_app(settings_for(serving_dir))
    release = threading.Event()
    entered = threading.Event()
    async with running(app) as c:
        model = app.state.predictor.registry.get("tiny_reg")
        original = model.engine.sample_many

        def held(jobs: Any) -> Any:
            entered.set()
            release.wait(timeout=30)
            return original(jobs)

        model.engine.sample_many = held
        try:
            task = asyncio.create_task(
                c.post("/v1/models/tiny_reg/predict", json={"inputs": [REG_ROW], "seed": 0})
            )
            while not entered.is_set():
                await asyncio.sleep(0.01)
            live = await c.get("/health/live")
            assert live.status_code == 200
            assert not task.done()  # the predict request is still computing
            release.set()
            assert (await task).status_code == 200
        finally:
            release.set()
            model.engine.sample_many = original

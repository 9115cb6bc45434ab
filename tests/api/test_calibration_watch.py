"""The calibration watch over HTTP: GET /v1/models, /metrics, the reset route, reloads, webhook."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.api.app import create_app
from service.artifacts.manifest import read_manifest, write_manifest
from service.artifacts.reference import save_reference
from service.config import Settings
from tests.api.conftest import CLF_ROW, running

pytestmark = pytest.mark.anyio

KEY = "watch-test-key-0123456789abcdef"
AUTH = {"X-API-Key": KEY}


def with_reference(
    folder: Path, scores: np.ndarray, when: str = "2026-01-01T00:00:00+00:00"
) -> None:
    """Store reference scores as `mcdrop calibrate` does (hash in the manifest), with the
    threshold at the 90th percentile of the scores."""
    m = read_manifest(folder)
    threshold = float(np.quantile(scores, 0.9))
    m.reference = save_reference(
        folder, scores, m.uncertainty_metric, threshold, m.default_samples, 0.1, when
    )
    write_manifest(folder, m)


@pytest.fixture
def model_dir(tmp_path: Path, tiny_classifier_dir: Path) -> Path:
    """shifted: reference far below any live entropy; calm: far above; plain: none."""
    root = tmp_path / "models"
    for name in ("shifted", "calm", "plain"):
        shutil.copytree(tiny_classifier_dir, root / name)
    with_reference(root / "shifted", np.linspace(0.0, 1e-9, 200))
    with_reference(root / "calm", np.linspace(50.0, 60.0, 200))
    return root


def settings(model_dir: Path, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_dir": str(model_dir),
        "default_model": "plain",
        "batching": False,
        "referrals": False,
        "api_keys": KEY,
    }
    return Settings(**(values | overrides))


async def predict(c: httpx.AsyncClient, name: str, times: int, **body: Any) -> None:
    for _ in range(times):
        r = await c.post(
            f"/v1/models/{name}/predict", json={"inputs": [CLF_ROW] * 2, **body}, headers=AUTH
        )
        assert r.status_code == 200, r.text


async def watch(c: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await c.get(f"/v1/models/{name}", headers=AUTH)
    assert r.status_code == 200
    out: dict[str, Any] = r.json()["calibration_watch"]
    return out


async def test_a_shift_is_reported_in_models_and_metrics_and_logged(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mcdrop.watch")
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        assert (await watch(c, "shifted"))["status"] == "holding"  # no traffic yet
        await predict(c, "shifted", 20)
        await predict(c, "calm", 20)
        w = await watch(c, "shifted")
        assert w["status"] == "shifted"
        assert w["martingale"] >= w["alarm_level"] == pytest.approx(100.0)
        assert w["requests_tested"] == 20 and w["rows_seen"] == 40
        assert w["window_referral_rate"] == 1.0  # every live row is over the reference threshold
        assert w["window_band"]["low"] > w["calibrated_referral_rate"] == 0.1
        assert not w["referral_rate_in_band"] and w["shifted_at"]
        calm = await watch(c, "calm")
        assert calm["status"] == "holding" and calm["martingale"] < 1.0
        plain = await watch(c, "plain")
        assert plain["status"] == "unavailable" and "mcdrop calibrate" in plain["reason"]
        await predict(c, "plain", 1)  # no reference: still serves
        text = (await c.get("/metrics")).text
        assert 'mcdrop_calibration_watch_shifted{model="shifted"} 1.0' in text
        assert 'mcdrop_calibration_watch_shifted{model="calm"} 0.0' in text
        assert 'mcdrop_calibration_watch_requests_tested{model="shifted"} 20.0' in text
        assert 'model="plain"' not in text.split("mcdrop_calibration_watch_shifted", 1)[1]
    shifted_logs = [r for r in caplog.records if "SHIFTED" in r.getMessage()]
    assert len(shifted_logs) == 1 and "'shifted'" in shifted_logs[0].getMessage()


async def test_requests_with_another_sample_count_are_skipped(
    model_dir: Path, tmp_path: Path
) -> None:
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        await predict(c, "shifted", 3, samples=8)
        w = await watch(c, "shifted")
        assert (w["requests_tested"], w["requests_skipped"], w["status"]) == (0, 3, "holding")


async def test_reset_needs_a_key_and_restarts_the_test(model_dir: Path, tmp_path: Path) -> None:
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        await predict(c, "shifted", 20)
        assert (await c.post("/v1/admin/models/shifted/watch/reset")).status_code == 401
        r = await c.post("/v1/admin/models/nope/watch/reset", headers=AUTH)
        assert r.status_code == 404
        r = await c.post("/v1/admin/models/shifted/watch/reset", headers=AUTH)
        assert r.status_code == 200
        assert (r.json()["status"], r.json()["requests_tested"], r.json()["martingale"]) == (
            "holding",
            0,
            1.0,
        )
        assert (await watch(c, "shifted"))["status"] == "holding"
        r = await c.post("/v1/admin/models/plain/watch/reset", headers=AUTH)
        assert r.json()["status"] == "unavailable"
    no_keys = settings(model_dir, tmp_path, api_keys=None)
    async with running(create_app(no_keys)) as c:
        r = await c.post("/v1/admin/models/shifted/watch/reset")
        assert r.status_code == 403 and "MCDROP_API_KEYS" in r.json()["error"]


async def test_state_survives_a_reload_of_the_same_version_and_resets_on_a_new_one(
    model_dir: Path, tmp_path: Path
) -> None:
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        await predict(c, "calm", 5)
        folder = model_dir / "calm"
        m = read_manifest(folder)
        m.metrics["touched"] = True  # the folder changes, so reload loads a new model object
        write_manifest(folder, m)
        r = await c.post("/v1/admin/reload", headers=AUTH)
        assert "calm" in r.json()["loaded"]
        assert (await watch(c, "calm"))["requests_tested"] == 5  # same version, same reference
        await predict(c, "calm", 1)
        assert (await watch(c, "calm"))["requests_tested"] == 6

        with_reference(folder, np.linspace(50.0, 60.0, 300), "2026-02-01T00:00:00+00:00")
        assert "calm" in (await c.post("/v1/admin/reload", headers=AUTH)).json()["loaded"]
        w = await watch(c, "calm")  # recalibrated: new reference scores, a fresh test
        assert w["requests_tested"] == 0 and w["reference_rows"] == 300

        await predict(c, "calm", 2)
        m = read_manifest(folder)
        m.version = "2"
        write_manifest(folder, m)
        assert "calm" in (await c.post("/v1/admin/reload", headers=AUTH)).json()["loaded"]
        assert (await watch(c, "calm"))["requests_tested"] == 0  # a new version starts afresh


async def test_a_damaged_reference_leaves_the_model_serving_without_a_watch(
    model_dir: Path, tmp_path: Path
) -> None:
    ref = model_dir / "calm" / "reference.safetensors"
    data = bytearray(ref.read_bytes())
    data[-1] ^= 0xFF
    ref.write_bytes(bytes(data))
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        await predict(c, "calm", 1)
        w = await watch(c, "calm")
        assert w["status"] == "unavailable" and "SHA-256 mismatch" in w["reason"]


async def test_the_shift_event_goes_out_once_on_the_referral_webhook(
    model_dir: Path, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        received.append(json.loads(body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    import uvicorn

    from tests.servers import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(receiver, host="127.0.0.1", port=port, log_level="error")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        s = settings(
            model_dir,
            tmp_path,
            referrals=True,
            database_url=f"sqlite:///{tmp_path / 'referrals.db'}",
            referral_spool=str(tmp_path / "spool.jsonl"),
            referral_webhook=f"http://127.0.0.1:{port}/hook",
        )
        async with running(create_app(s)) as c:
            await predict(c, "shifted", 40, refer=False)  # no referral events, only the watch's
            for _ in range(3000):  # bounded wait for the delivery (not a timing assertion)
                if received:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # room for a second event, which must not come
        assert len(received) == 1
        event = received[0]
        assert event["event"] == "calibration_watch.shifted" and event["model"] == "shifted"
        assert event["martingale"] >= 100 and event["requests_tested"] <= 40
        assert event["url"] == "/v1/models/shifted"
    finally:
        server.should_exit = True
        await serving

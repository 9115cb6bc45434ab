"""The prediction path records abstained rows: ids in the answer, full records in the store,
opt-out, hash-only inputs, and a broken store that never fails a prediction nor loses a row."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.api.app import create_app
from service.config import Settings
from service.referrals.records import input_sha256
from tests.api.conftest import CLF_ROW, REG_ROW, running

pytestmark = pytest.mark.anyio

ALWAYS = -1.0  # a threshold below any uncertainty: every row abstains
NEVER = 1e300


def settings(model_dir: Path, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_dir": str(model_dir),
        "database_url": f"sqlite:///{tmp_path / 'referrals.db'}",
        "referral_spool": str(tmp_path / "spool.jsonl"),
        "batching": False,
    }
    return Settings(**(values | overrides))


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus sample over its labels."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


async def test_abstained_rows_get_ids_and_full_records(model_dir: Path, tmp_path: Path) -> None:
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        body = {"inputs": [CLF_ROW, CLF_ROW], "samples": 20, "seed": 11, "threshold": ALWAYS}
        r = await c.post("/v1/models/tiny_clf/predict", json=body, headers={"X-Request-ID": "r-1"})
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]
        ids = [p["referral_id"] for p in rows]
        assert all(ids) and len(set(ids)) == 2
        got = (await c.get(f"/v1/referrals/{ids[1]}")).json()
        assert (got["status"], got["model"], got["model_version"], got["request_id"]) == (
            "pending",
            "tiny_clf",
            "1",
            "r-1",
        )
        assert (got["row_index"], got["seed"], got["samples"], got["threshold"]) == (
            1,
            11,
            20,
            ALWAYS,
        )
        assert got["uncertainty_metric"] == "predictive_entropy"
        assert got["input"] == CLF_ROW and got["input_sha256"] == input_sha256(CLF_ROW)
        sent = {k: v for k, v in rows[1].items() if k != "referral_id"}
        assert got["prediction"] == sent  # the full breakdown, exactly as the client got it
        assert got["uncertainty"] == rows[1]["uncertainty"]

        none = await c.post(
            "/v1/models/tiny_reg/predict", json={"inputs": [REG_ROW], "threshold": NEVER}
        )
        assert none.json()["predictions"][0]["referral_id"] is None
        assert (await c.get("/v1/referrals", params={"model": "tiny_reg"})).json()["total"] == 0
        m = (await c.get("/metrics")).text
        assert metric(m, "mcdrop_referrals_recorded_total") == 2
        assert metric(m, "mcdrop_referral_store_failures_total") == 0


async def test_refer_false_opts_out(model_dir: Path, tmp_path: Path) -> None:
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        body = {"inputs": [REG_ROW], "threshold": ALWAYS, "refer": False}
        r = await c.post("/v1/models/tiny_reg/predict", json=body)
        row = r.json()["predictions"][0]
        assert row["abstain"] is True and row["referral_id"] is None
        assert (await c.get("/v1/referrals")).json()["total"] == 0
        bad = await c.post("/v1/models/tiny_reg/predict", json={**body, "refer": "no"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["refer"]


async def test_hash_only_inputs(model_dir: Path, tmp_path: Path) -> None:
    s = settings(model_dir, tmp_path, referral_store_inputs=False)
    async with running(create_app(s)) as c:
        r = await c.post(
            "/v1/models/tiny_reg/predict", json={"inputs": [REG_ROW], "threshold": ALWAYS}
        )
        got = (await c.get(f"/v1/referrals/{r.json()['predictions'][0]['referral_id']}")).json()
        assert got["input"] is None
        assert got["input_sha256"] == input_sha256(np.asarray(REG_ROW, np.float64))


async def test_store_down_at_start_still_answers_and_spools_then_replays(
    model_dir: Path, tmp_path: Path
) -> None:
    """The store cannot even be opened: predictions answer 200, rows go to the spool, and the
    next start with a working store replays them (no row is dropped across the restart)."""
    broken = settings(model_dir, tmp_path, database_url="sqlite:////proc/mcdrop/no.db")
    async with running(create_app(broken)) as c:
        r = await c.post(
            "/v1/models/tiny_clf/predict", json={"inputs": [CLF_ROW] * 3, "threshold": ALWAYS}
        )
        assert r.status_code == 200
        ids = [p["referral_id"] for p in r.json()["predictions"]]
        assert all(ids)
        m = (await c.get("/metrics")).text
        assert metric(m, 'mcdrop_referral_store_failures_total{reason="unavailable"}') == 3
        assert metric(m, "mcdrop_referrals_spooled_total") == 3
        assert metric(m, "mcdrop_referral_spool_pending") == 3
        assert (await c.get("/v1/referrals")).status_code == 503  # the review API says so
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        for i in ids:
            assert (await c.get(f"/v1/referrals/{i}")).json()["status"] == "pending"
        m = (await c.get("/metrics")).text
        assert metric(m, 'mcdrop_referrals_recorded_total{path="replayed"}') == 3
        assert metric(m, "mcdrop_referral_spool_pending") == 0
    assert not list(tmp_path.glob("spool.jsonl*"))  # replayed files are gone


async def test_a_hanging_store_times_out_to_the_spool(model_dir: Path, tmp_path: Path) -> None:
    """The insert hangs: the prediction waits only the write timeout, answers 200, and the
    rows are spooled; when the insert finally ends, the replay does not duplicate them."""
    app = create_app(settings(model_dir, tmp_path, referral_write_timeout_ms=50))
    release = threading.Event()
    async with running(app) as c:
        store = app.state.referrals.store
        real_add: Callable[[list[dict[str, Any]]], list[str]] = store.add

        def stuck_add(rows: list[dict[str, Any]]) -> list[str]:
            release.wait(30)
            return real_add(rows)

        store.add = stuck_add
        r = await c.post(
            "/v1/models/tiny_reg/predict", json={"inputs": [REG_ROW], "threshold": ALWAYS}
        )
        assert r.status_code == 200
        rid = r.json()["predictions"][0]["referral_id"]
        m = (await c.get("/metrics")).text
        assert metric(m, 'mcdrop_referral_store_failures_total{reason="timeout"}') == 1
        assert metric(m, "mcdrop_referrals_spooled_total") == 1
        store.add = real_add
        release.set()  # the hung insert now completes, after the row was spooled
        recorder = app.state.referrals
        for _ in range(1000):  # bounded wait for the late insert to land
            if recorder._in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert await recorder.replay() == 0  # the spooled copy was already in the store
        assert (await c.get(f"/v1/referrals/{rid}")).json()["id"] == rid
        assert (await c.get("/v1/referrals")).json()["total"] == 1  # once, never twice


async def test_webhook_posts_each_new_referral_with_retries(
    model_dir: Path, tmp_path: Path
) -> None:
    received: list[dict[str, Any]] = []
    attempts = 0

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        nonlocal attempts
        import json

        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        attempts += 1
        status = 500 if attempts == 1 else 200  # the first delivery fails: it is retried
        if status == 200:
            received.append(json.loads(body))
        await send({"type": "http.response.start", "status": status, "headers": []})
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
        s = settings(model_dir, tmp_path, referral_webhook=f"http://127.0.0.1:{port}/hook")
        app = create_app(s)
        app.state.referrals.webhook.backoff_s = 0.01
        async with running(app) as c:
            r = await c.post(
                "/v1/models/tiny_clf/predict", json={"inputs": [CLF_ROW] * 2, "threshold": ALWAYS}
            )
            ids = {p["referral_id"] for p in r.json()["predictions"]}
            for _ in range(
                3000
            ):  # wait for both deliveries (bounded at 30 s; not a timing assertion)
                if len(received) == 2:
                    break
                await asyncio.sleep(0.01)
            assert {e["referral_id"] for e in received} == ids
            assert all(
                e["event"] == "referral.created" and e["model"] == "tiny_clf" for e in received
            )
            assert "input" not in received[0]
            assert attempts == 3  # one refused delivery, retried, and the other event
            # The receiver records an event before it answers, and the sender counts a delivery
            # once it has read the answer: poll (bounded) for the second count to land.
            delivered = 0.0
            for _ in range(3000):
                m = (await c.get("/metrics")).text
                delivered = metric(m, 'mcdrop_referral_webhook_total{outcome="delivered"}')
                if delivered == 2:
                    break
                await asyncio.sleep(0.01)
            assert delivered == 2
    finally:
        server.should_exit = True
        await serving


async def test_v2_infer_records_referrals_and_honours_refer_false(
    model_dir: Path, tmp_path: Path
) -> None:
    async with running(create_app(settings(model_dir, tmp_path))) as c:
        tensor = {"name": "input", "shape": [1, len(CLF_ROW)], "datatype": "FP32", "data": CLF_ROW}
        params: dict[str, Any] = {"samples": 16, "seed": 2, "threshold": ALWAYS}
        r = await c.post(
            "/v2/models/tiny_clf/infer", json={"inputs": [tensor], "parameters": params}
        )
        assert r.status_code == 200, r.text
        ids = r.json()["parameters"]["referral_ids"]
        assert len(ids) == 1 and ids[0]
        got = (await c.get(f"/v1/referrals/{ids[0]}")).json()
        assert (got["status"], got["model"], got["seed"], got["samples"]) == (
            "pending",
            "tiny_clf",
            2,
            16,
        )
        params["refer"] = False
        r = await c.post(
            "/v2/models/tiny_clf/infer", json={"inputs": [tensor], "parameters": params}
        )
        assert r.status_code == 200 and "referral_ids" not in r.json()["parameters"]
        params["refer"] = "no"
        r = await c.post(
            "/v2/models/tiny_clf/infer", json={"inputs": [tensor], "parameters": params}
        )
        assert r.status_code == 400 and "parameters.refer" in r.json()["error"]

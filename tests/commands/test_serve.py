"""`mcdrop serve`: the README's serve command, run for real as a subprocess on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.cli import main
from tests.conftest import REPO
from tests.servers import free_port, stop, wait_ready


@pytest.mark.timeout(120)
def test_serve_end_to_end(tmp_path: Path) -> None:
    """Start the installed console script (what `make serve` runs) on the shipped models."""
    mcdrop = Path(sys.executable).parent / "mcdrop"
    port = free_port()
    env = {**os.environ, "MCDROP_PORT": str(port), "MCDROP_LOG_LEVEL": "info"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(mcdrop), "serve"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, base, tmp_path / "serve.log")
        r = httpx.post(
            f"{base}/predict",
            json={"model": "diabetes", "inputs": [[0.0] * 10], "samples": 20, "seed": 0},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "diabetes" and len(body["predictions"]) == 1
        assert r.headers["x-request-id"] == body["request_id"]
    finally:
        stop(proc)
        log.close()
    # uvicorn shuts down gracefully (lifespan included), then re-raises SIGTERM on itself.
    output = (tmp_path / "serve.log").read_text()
    assert proc.returncode in (0, -signal.SIGTERM), output[-2000:]
    assert "Application shutdown complete" in output, output[-2000:]


def test_serve_reports_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCDROP_DEVICE", "tpu")
    assert main(["serve"]) == 2
    assert "MCDROP_DEVICE" in capsys.readouterr().err


def test_serve_refuses_a_missing_default_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MCDROP_DEFAULT_MODEL", "nope")
    assert main(["serve", "--model-dir", str(REPO / "models")]) == 2
    assert "MCDROP_DEFAULT_MODEL: 'nope'" in capsys.readouterr().err

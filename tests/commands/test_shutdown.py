"""Signals on a real `mcdrop serve` process (loopback, free port, bounded): SIGHUP reloads the
model directory, and SIGTERM lets the requests in flight finish before the process exits."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROW = [0.5, -1.0, 2.0]


def _wait_until(check, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


@pytest.mark.timeout(180)
def test_sighup_reloads_and_sigterm_completes_requests_in_flight(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_regression_dir, models / "m")
    port = free_port()
    env = {
        **os.environ,
        "MCDROP_PORT": str(port),
        "MCDROP_MODEL_DIR": str(models),
        "MCDROP_BATCHING": "false",  # one pass at a time: requests really queue up
        "MCDROP_SHUTDOWN_GRACE_S": "60",
        "MCDROP_NUM_THREADS": "1",
    }
    log_path = tmp_path / "serve.log"
    log = log_path.open("w")
    mcdrop = Path(sys.executable).parent / "mcdrop"
    proc = subprocess.Popen([str(mcdrop), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        ok = _wait_until(lambda: httpx.get(f"{base}/health/ready").status_code == 200, 90)
        assert ok, log_path.read_text()[-2000:]

        # SIGHUP: a folder added after start-up is picked up.
        shutil.copytree(tiny_regression_dir, models / "added")
        proc.send_signal(signal.SIGHUP)
        found = _wait_until(
            lambda: any(
                m["name"] == "added" for m in httpx.get(f"{base}/v1/models").json()["models"]
            ),
            30,
        )
        assert found, log_path.read_text()[-2000:]

        # SIGTERM while 8 heavy requests (T·N = 1,000,000 each) are open: passes run one at a
        # time, so when the first answer arrives the other seven are still queued or running.
        results: list[tuple[int, float]] = []
        first_done = threading.Event()
        body = {"inputs": [ROW] * 500, "samples": 2000, "seed": 0}

        def call() -> None:
            r = httpx.post(f"{base}/v1/models/m/predict", json=body, timeout=120)
            results.append((r.status_code, time.monotonic()))
            first_done.set()

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        assert first_done.wait(120), log_path.read_text()[-2000:]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=150)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = log_path.read_text()
    assert [code for code, _ in results] == [200] * 8, output[-3000:]
    # Ordering, not timing: answers that came after the signal were in flight at it.
    assert sum(done > signalled for _, done in results) >= 1, "none was in flight at SIGTERM"
    assert proc.returncode in (0, -signal.SIGTERM), output[-2000:]
    assert "Application shutdown complete" in output

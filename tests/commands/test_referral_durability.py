"""A real `mcdrop serve`, killed with SIGKILL while concurrent requests have every row referred:
after a restart (which replays the spool), every referral id a client was answered with is in
the store, exactly once, across several kill cycles."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.servers import free_port, wait_ready

CYCLES = 3
CLIENTS = 8
ROW = [0.5, -1.0, 2.0]


def _start(models: Path, work: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MCDROP_PORT": str(port),
        "MCDROP_MODEL_DIR": str(models),
        "MCDROP_DATABASE_URL": f"sqlite:///{work / 'referrals.db'}",
        "MCDROP_REFERRAL_SPOOL": str(work / "spool.jsonl"),
        "MCDROP_LOG_LEVEL": "warning",
        "MCDROP_NUM_THREADS": "1",
    }
    mcdrop = Path(sys.executable).parent / "mcdrop"
    out = log.open("a")
    proc = subprocess.Popen(
        [str(mcdrop), "serve"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    wait_ready(proc, f"http://127.0.0.1:{port}", log)
    return proc


def _load(base: str, acked: list[str], stop: threading.Event) -> None:
    """Abstaining requests back to back until stopped; collects the ids answered with."""
    body = {"inputs": [ROW, ROW], "samples": 8, "threshold": -1}
    with httpx.Client(timeout=10) as c:
        while not stop.is_set():
            try:
                r = c.post(f"{base}/v1/models/m/predict", json=body)
            except httpx.TransportError:
                return  # the server was killed under this request: it was never answered
            if r.status_code == 200:
                acked.extend(p["referral_id"] for p in r.json()["predictions"])


@pytest.mark.timeout(600)
def test_sigkill_under_referral_load_loses_no_acknowledged_id(
    tmp_path: Path, tiny_regression_dir: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_regression_dir, models / "m")
    log = tmp_path / "serve.log"
    acked: list[str] = []
    for _ in range(CYCLES):
        port = free_port()
        proc = _start(models, tmp_path, port, log)
        stop = threading.Event()
        threads = [
            threading.Thread(target=_load, args=(f"http://127.0.0.1:{port}", acked, stop))
            for _ in range(CLIENTS)
        ]
        before = len(acked)
        for t in threads:
            t.start()
        for _ in range(300):  # bounded (30 s): kill once answers are flowing
            if len(acked) - before >= 100:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert len(acked) - before >= 100, log.read_text()[-2000:]

    # A last start replays whatever the killed runs spooled; then a clean stop.
    proc = _start(models, tmp_path, free_port(), log)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert all(acked) and len(set(acked)) == len(acked)
    with sqlite3.connect(tmp_path / "referrals.db") as db:
        stored = [row[0] for row in db.execute("SELECT id FROM referrals")]
    assert len(stored) == len(set(stored))  # each stored once
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged referral(s) lost: {log.read_text()[-2000:]}"
    assert not list(tmp_path.glob("spool.jsonl*"))  # everything spooled was replayed

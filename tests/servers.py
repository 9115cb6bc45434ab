"""A real `mcdrop serve` in a subprocess on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(model_dir: Path, workdir: Path, **env: str) -> Iterator[str]:
    """Start `mcdrop serve` on model_dir; yields its base URL once ready; stops it after."""
    mcdrop = Path(sys.executable).parent / "mcdrop"
    port = free_port()
    environ = {
        **os.environ,
        "MCDROP_PORT": str(port),
        "MCDROP_MODEL_DIR": str(model_dir),
        "MCDROP_DATABASE_URL": f"sqlite:///{workdir / 'referrals.db'}",
        "MCDROP_REFERRAL_SPOOL": str(workdir / "spool.jsonl"),
        "MCDROP_LOG_LEVEL": "warning",
        **env,
    }
    log_path = workdir / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(mcdrop), "serve"], cwd=REPO, env=environ, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(proc, base, log_path)
            yield base
        finally:
            stop(proc)


def wait_ready(proc: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    """Poll /health/ready (bounded at 90 s) until it answers 200; fail with the server's log."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server did not start: {log_path.read_text()[-2000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

"""Slow clients cannot take a real `mcdrop serve` down: more half-sent requests than the
connection cap, heads that never end or bodies trickled a byte a second, leave the health probes
answering 200 at once and real requests served, and are closed after their read deadline."""

from __future__ import annotations

import functools
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.servers import serving

CAP = 4  # MCDROP_MAX_CONNECTIONS for these servers
SLOW = 3 * CAP  # slow connections, well above the cap
READ_TIMEOUT_S = 2  # both read deadlines
ROW = [0.5, -1.0, 2.0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, tiny_regression_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("slow_client_models")
    shutil.copytree(tiny_regression_dir, root / "m")
    return root


def _open(base: str, first_bytes: bytes) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(first_bytes)
    return s


def _probe(base: str, path: str) -> tuple[int, float]:
    """GET path on a fresh connection with a raw socket (no client set-up in the timing):
    the status and the seconds from connecting to the end of the answer."""
    t0 = time.perf_counter()
    with _open(base, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()) as s:
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    return int(answer[9:12]), time.perf_counter() - t0


def _check_server_is_usable(base: str) -> None:
    """Probes answer 200, the fastest of three within 100 ms (the bound a liveness probe is
    given; a probe refused or queued behind the slow clients would fail or wait far longer),
    and a real prediction is served."""
    took = []
    for path in ("/health/live", "/health/ready", "/v2/health/live"):
        status, seconds = _probe(base, path)
        assert status == 200, (path, status)
        took.append(seconds)
    assert min(took) < 0.1, took
    r = httpx.post(f"{base}/v1/models/m/predict", json={"inputs": [ROW], "samples": 8}, timeout=30)
    assert r.status_code == 200, r.text


def _closed_by_server(s: socket.socket, keep_sending: Callable[[], None] | None = None) -> bytes:
    """Everything the server sent until it closed the connection (bounded at 30 s), sending a
    byte a second meanwhile when asked to."""
    s.settimeout(1.0)
    got = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            if keep_sending is not None:
                try:
                    keep_sending()
                except OSError:  # reset: the server has closed it
                    return got
            continue
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk
    raise AssertionError(f"connection still open after 30 s; received {got!r}")


@pytest.mark.timeout(180)
def test_half_sent_heads_above_the_cap(models: Path, tmp_path: Path) -> None:
    env = {
        "MCDROP_MAX_CONNECTIONS": str(CAP),
        "MCDROP_HEADER_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "MCDROP_BODY_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "MCDROP_BATCHING": "false",
    }
    with serving(models, tmp_path, **env) as base:
        slow = [
            _open(base, b"POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\n") for _ in range(SLOW)
        ]
        silent = _open(base, b"")  # connects and sends nothing at all
        try:
            _check_server_is_usable(base)
            for s in slow:
                assert _closed_by_server(s).startswith(b"HTTP/1.1 408 ")
            assert _closed_by_server(silent).startswith(b"HTTP/1.1 408 ")
            _check_server_is_usable(base)
        finally:
            for s in [*slow, silent]:
                s.close()


@pytest.mark.timeout(180)
def test_bodies_trickled_a_byte_a_second_above_the_cap(models: Path, tmp_path: Path) -> None:
    env = {
        "MCDROP_MAX_CONNECTIONS": str(CAP),
        "MCDROP_HEADER_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "MCDROP_BODY_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "MCDROP_BATCHING": "false",
    }
    head = (
        b"POST /v1/models/m/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    with serving(models, tmp_path, **env) as base:
        slow = [_open(base, head) for _ in range(SLOW)]
        try:
            _check_server_is_usable(base)
            for s in slow:
                # Sent a byte a second, the body would take 1000 s: the deadline ends it first.
                _closed_by_server(s, keep_sending=functools.partial(s.sendall, b" "))
            _check_server_is_usable(base)
        finally:
            for s in slow:
                s.close()

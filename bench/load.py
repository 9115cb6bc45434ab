"""Bounded HTTP load on loopback: latency and status counts at concurrency 1, 16 and 64, then an
overload phase at 64 that exceeds the admission bound on purpose.

    .venv/bin/python bench/load.py                  # starts `mcdrop serve` on a free port
    .venv/bin/python bench/load.py --url http://127.0.0.1:8000   # an already running server

Expected: only 200 and 503 (with Retry-After) in every phase, and /health/live answering in
under 100 ms throughout (polled every 50 ms from its own thread and connection). Every phase is
bounded in requests and seconds; only loopback URLs are accepted. A benchmark, not a test: the
figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
ROW = [0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.003, 0.02, -0.02]  # diabetes: 10 features
# The spawned server's admission bound, small enough for the overload phase to pass it.
SERVER_ENV = {
    "MCDROP_MAX_SAMPLE_ROWS": "32000",
    "MCDROP_MAX_INFLIGHT_SAMPLE_ROWS": "64000",
    "MCDROP_MAX_QUEUED_REQUESTS": "8",
    "MCDROP_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    "MCDROP_LOG_LEVEL": "warning",
}


@dataclass
class Phase:
    name: str
    concurrency: int
    samples: int
    rows: int
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


async def run_phase(base: str, phase: Phase, max_requests: int, max_seconds: float) -> None:
    body = {"model": "diabetes", "inputs": [ROW] * phase.rows, "samples": phase.samples}
    limits = httpx.Limits(
        max_connections=phase.concurrency, max_keepalive_connections=phase.concurrency
    )
    sent = 0
    t0 = time.perf_counter()
    stop_at = t0 + max_seconds
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal sent
            while sent < max_requests and time.perf_counter() < stop_at:
                sent += 1
                start = time.perf_counter()
                try:
                    r = await client.post("/predict", json=body)
                except httpx.HTTPError as e:
                    phase.errors[type(e).__name__] += 1
                    continue
                phase.latencies.append(time.perf_counter() - start)
                phase.statuses[r.status_code] += 1
                if r.status_code == 503 and "retry-after" not in r.headers:
                    phase.errors["503 without Retry-After"] += 1

        await asyncio.gather(*(worker() for _ in range(phase.concurrency)))
    phase.seconds = time.perf_counter() - t0


class HealthProbe(threading.Thread):
    """GET /health/live every 50 ms on its own connection, until stopped."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.latencies: list[float] = []
        self.failures = 0
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as client:
            while not self.done.is_set():
                start = time.perf_counter()
                try:
                    ok = client.get("/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - start)
                self.failures += not ok
                self.done.wait(0.05)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, **SERVER_ENV, "MCDROP_PORT": str(port), "MCDROP_HOST": "127.0.0.1"}
    mcdrop = Path(sys.executable).parent / "mcdrop"
    proc = subprocess.Popen([str(mcdrop), "serve"], cwd=REPO, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.terminate()
    raise SystemExit("server did not become ready within 90 s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", help="a running server on loopback (default: start one)")
    p.add_argument("--requests", type=int, default=400, help="most requests per phase")
    p.add_argument("--max-seconds", type=float, default=30.0, help="most seconds per phase")
    p.add_argument("--json", type=Path, default=REPO / "bench/results/load.json")
    args = p.parse_args()
    if args.url and urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("bench/load.py only targets loopback")
    proc, base = (None, args.url.rstrip("/")) if args.url else _spawn()
    phases = [
        Phase("c=1", 1, samples=100, rows=1),
        Phase("c=16", 16, samples=100, rows=1),
        Phase("c=64", 64, samples=100, rows=1),
        # T·N = 32,000 each against a bound of 64,000 and 8 queue places: most are refused.
        Phase("c=64 overload", 64, samples=1000, rows=32),
    ]
    probe = HealthProbe(base)
    probe.start()
    try:
        for phase in phases:
            asyncio.run(run_phase(base, phase, args.requests, args.max_seconds))
    finally:
        probe.done.set()
        probe.join()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    print(
        "| phase | requests | 200 | other statuses | client errors "
        "| p50 ms | p95 ms | p99 ms | req/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    rows: list[dict[str, Any]] = []
    for ph in phases:
        n = sum(ph.statuses.values()) + sum(ph.errors.values())
        other = {k: v for k, v in sorted(ph.statuses.items()) if k != 200}
        row = {
            "phase": ph.name,
            "requests": n,
            "ok": ph.statuses[200],
            "other": other,
            "errors": dict(ph.errors),
            "p50_ms": _pct(ph.latencies, 50),
            "p95_ms": _pct(ph.latencies, 95),
            "p99_ms": _pct(ph.latencies, 99),
            "rps": n / ph.seconds if ph.seconds else 0.0,
        }
        rows.append(row)
        print(
            f"| {ph.name} | {n} | {row['ok']} | {other or '-'} | {dict(ph.errors) or '-'} | "
            f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} | {row['rps']:.0f} |"
        )
    h = probe.latencies
    over = sum(1 for x in h if x > 0.1)
    health = {
        "probes": len(h),
        "failures": probe.failures,
        "p50_ms": _pct(h, 50),
        "p99_ms": _pct(h, 99),
        "max_ms": max(h) * 1000 if h else float("nan"),
        "over_100ms": over,
    }
    print(
        f"\n/health/live: {len(h)} probes, {probe.failures} failed, p50 {health['p50_ms']:.1f} ms, "
        f"p99 {health['p99_ms']:.1f} ms, max {health['max_ms']:.1f} ms, {over} over 100 ms"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"server_env": SERVER_ENV if proc else None, "phases": rows, "health": health}, indent=2
        )
        + "\n"
    )
    unexpected = any(set(r["other"]) - {503} or r["errors"] for r in rows)
    return 1 if unexpected or probe.failures or over else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Slow clients against the server, and what the guard against them costs, in one run.

    .venv/bin/python bench/slow_clients.py [--seconds 4] [--repeats 3] [--slow 1100]

Two servers of the same app on loopback, started alternately per repeat (one torch thread,
batcher on, OMP_WAIT_POLICY=PASSIVE, log level warning), differing only in uvicorn's HTTP
protocol:
- plain: uvicorn's own httptools protocol (no read deadlines; the connection cap of 1024 counts
  every open connection and answers 503 past it, health included);
- guarded: service.api.protocol.GuardedHttpProtocol, as `mcdrop serve` runs it.
Against each:
1. throughput: closed-loop load on the light model (`diabetes`, N=1, T=100, `"refer": false`) at
   concurrency 32 from the raw HTTP/1.1 client of bench/load_http.py;
2. slowloris: `--slow` connections each send a partial request head (`POST /predict HTTP/1.1`,
   one header, then nothing); with them open, five GET /health/live probes, each on a fresh
   connection, give their status and latency; then the connections are dropped.
Prints medians over the repeats and the guarded / plain throughput ratio; writes
bench/results/slow_clients.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from load_http import run_level
from serve_load import free_port, repo_relative, server_cpu, stop_server

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results" / "slow_clients.json"
SLOW_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\n"


def serve(kind: str, port: int, model_dir: str) -> None:
    """The server process: the app of `mcdrop serve`, with the plain or the guarded protocol."""
    import uvicorn

    from service.api.app import create_app
    from service.api.protocol import guarded_protocol
    from service.config import Settings

    settings = Settings(model_dir=model_dir, port=port, log_level="warning")
    extra: dict[str, Any] = {}
    if kind == "guarded":
        extra["http"] = guarded_protocol(
            settings.header_read_timeout_s, settings.body_read_timeout_s
        )
    uvicorn.run(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        limit_concurrency=settings.max_connections,
        **extra,
    )


def start(kind: str, model_dir: Path, port: int, tmp: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MCDROP_NUM_THREADS": "1",
        "MCDROP_DATABASE_URL": f"sqlite:///{tmp}/referrals.db",
        "MCDROP_REFERRAL_SPOOL": f"{tmp}/spool.jsonl",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    args = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--model-dir"]
    proc = subprocess.Popen([*args, str(model_dir)], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"{kind} server not ready within 90 s")


async def probe(port: int) -> tuple[int, float]:
    """GET /health/live on a fresh connection: status (0 when refused) and seconds."""
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status = int(answer[9:12]) if answer else 0
    except (OSError, TimeoutError):
        status = 0
    return status, time.perf_counter() - t0


async def slowloris(port: int, n: int) -> list[tuple[int, float]]:
    """Open n partial requests, probe health five times while they are open, drop them."""
    held = []
    for _ in range(n):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            break
        writer.write(SLOW_HEAD)
        held.append(writer)
    await asyncio.sleep(1.0)  # let the server read every partial head
    probes = []
    for _ in range(5):
        probes.append(await probe(port))
        await asyncio.sleep(0.2)
    for w in held:
        w.close()
    return probes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slow", type=int, default=1100, help="partial-head connections")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--serve", choices=["plain", "guarded"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.model_dir)
        return

    rng = np.random.default_rng(0)
    body = json.dumps(
        {"inputs": rng.normal(0, 0.05, (1, 10)).tolist(), "samples": 100, "refer": False}
    ).encode()
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcdrop-slow-clients-") as tmp:
        model_dir = Path(tmp) / "models"
        shutil.copytree(ROOT / "models" / "diabetes", model_dir / "diabetes")
        for rep in range(args.repeats):
            for kind in ("plain", "guarded") if rep % 2 == 0 else ("guarded", "plain"):
                port = free_port()
                proc = start(kind, model_dir, port, tmp)
                url = f"http://127.0.0.1:{port}/v1/models/diabetes/predict"
                try:
                    asyncio.run(run_level(url, "POST", body, 32, 1.0, 5000))  # warm-up
                    c0 = server_cpu(proc.pid)
                    r = asyncio.run(run_level(url, "POST", body, 32, args.seconds, 50_000))
                    r["server_cpu_s"] = server_cpu(proc.pid) - c0
                    probes = asyncio.run(slowloris(port, args.slow))
                finally:
                    stop_server(proc)
                r |= {"kind": kind, "repeat": rep, "probes": probes}
                runs.append(r)
                statuses = [s for s, _ in probes]
                print(
                    f"rep {rep} {kind:>7}: {r['rps']:7.1f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms  server CPU {r['server_cpu_s']:.1f}s of "
                    f"{r['wall_s']:.1f}s | {args.slow} slow connections: health statuses "
                    f"{statuses}, slowest {1e3 * max(t for _, t in probes):.1f} ms",
                    flush=True,
                )
    report(runs, args, load_start, os.getloadavg())


def report(
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> None:
    def med(kind: str, field: str) -> float:
        return float(np.median([r[field] for r in runs if r["kind"] == kind]))

    ratio = med("guarded", "rps") / med("plain", "rps")
    print(
        f"\nmedians of {args.repeats} repeats, {args.seconds:.0f} s each, diabetes, N=1, T=100, "
        f"c=32, {os.cpu_count()} cores, load average {load_start[0]:.1f} at start, "
        f"{load_end[0]:.1f} at end"
    )
    for kind in ("plain", "guarded"):
        probes = [p for r in runs if r["kind"] == kind for p in r["probes"]]
        ok = sum(s == 200 for s, _ in probes)
        print(
            f"{kind:>8}: {med(kind, 'rps'):7.1f} req/s  p99 {med(kind, 'p99_ms'):6.2f} ms | "
            f"health under {args.slow} slow connections: {ok}/{len(probes)} answered 200, "
            f"median {1e3 * float(np.median([t for _, t in probes])):.1f} ms"
        )
    print(f"guarded / plain requests/s: {ratio:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("serve", "port", "model_dir")}
    settings["out"] = repo_relative(out)
    out.write_text(
        json.dumps(
            {
                "settings": settings | {"load_average": [load_start, load_end]},
                "guarded_over_plain_rps": ratio,
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Part c: closed-loop HTTP load on loopback with a low-CPU raw HTTP/1.1 client.

An httpx load generator saturates a core at a few hundred requests/s and then measures itself
rather than the server, so this client writes pre-encoded requests on keep-alive asyncio streams and
parses only the status line and Content-Length. It reports requests/s, p50/p99 latency and its
own CPU time, at each concurrency, for one URL. Run it once per server configuration:

    # terminal 1: the service with the batcher on (MCDROP_BATCHING=false for it off)
    make serve
    # terminal 2
    .venv/bin/python bench/load_http.py http://127.0.0.1:8000/v1/models/diabetes/predict \
        --body '{"inputs": [[0,0,0,0,0,0,0,0,0,0]], "samples": 100}' --label batcher-on
    .venv/bin/python bench/load_http.py http://127.0.0.1:8000/health/live --method GET \
        --label http-ceiling

Results are appended to bench/results/load_http.json. bench/serve_load.py runs the whole
part-c comparison (servers, ceilings, repeats) in one go.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

OUT = Path(__file__).resolve().parent / "results" / "load_http.json"


def encode_request(url: str, method: str, body: bytes) -> tuple[str, int, bytes]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: keep-alive\r\n"
    if method != "GET":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return host, port, (head + "\r\n").encode() + (body if method != "GET" else b"")


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def client(
    host: str,
    port: int,
    request: bytes,
    stop_at: float,
    lat: list[float],
    errors: list[int],
    max_requests: int,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at and len(lat) < max_requests:
            t = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            lat.append(time.perf_counter() - t)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def run_level(
    url: str, method: str, body: bytes, conc: int, seconds: float, max_requests: int = 1_000_000
) -> dict[str, Any]:
    """Closed loop: `conc` connections each send the next request when the previous answers,
    until `seconds` have passed or `max_requests` answered, whichever comes first."""
    host, port, request = encode_request(url, method, body)
    lat: list[float] = []
    errors: list[int] = []
    c0, t0 = time.process_time(), time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(
        *(client(host, port, request, stop_at, lat, errors, max_requests) for _ in range(conc))
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    arr = np.array(lat) * 1e3
    return {
        "concurrency": conc,
        "requests": len(lat),
        "rps": len(lat) / wall,
        "p50_ms": float(np.percentile(arr, 50)) if len(arr) else float("nan"),
        "p99_ms": float(np.percentile(arr, 99)) if len(arr) else float("nan"),
        "errors": len(errors),
        "client_cpu_s": cpu,
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--method", default="POST", choices=["POST", "GET"])
    ap.add_argument("--body", default="{}")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    rows = []
    for conc in args.concurrency:
        r = asyncio.run(run_level(args.url, args.method, args.body.encode(), conc, args.seconds))
        r["label"] = args.label
        rows.append(r)
        print(
            f"{args.label:>14} c={conc:<3} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
            f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}  client CPU {r['client_cpu_s']:.2f}s "
            f"of {r['wall_s']:.1f}s",
            flush=True,
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(OUT.read_text()) if OUT.exists() else []
    OUT.write_text(json.dumps(previous + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

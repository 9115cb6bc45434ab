"""Event-loop CPU per request, in process: the part c ceiling that the HTTP benchmark cannot show.

    .venv/bin/python bench/loop_cost.py [--model diabetes|ref] [--concurrency 32] [--requests 4000]
                                        [--rows 1]

bench/serve_load.py measures requests/s over loopback, where the load generator shares the two
cores with the server. This one calls the ASGI app directly (no sockets, no client) with
`--concurrency` requests in flight, batcher on, and reports per request:
  loop:   CPU time of the event-loop thread (time.thread_time), the serial part of a server;
  others: CPU time of every other thread (batcher, torch thread, mask threads);
  wall:   elapsed time / requests.
for GET /health/live (the trivial endpoint), POST /v1/models/{model}/predict (N=--rows, T=100) and
the same request over V2 (POST /v2/models/{model}/infer, JSON tensor in, the mean, variance,
uncertainty and abstain tensors out),
where `ref` is bench/serve_load.py's reference MLP (written to a temporary folder),
alternating over the repeats, with the ratio of predict to trivial measured in the same run.
Python runs one thread at a time, so loop + others close to wall means the two take turns.
Set MCDROP_NUM_THREADS=1 to match bench/serve_load.py's servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvloop

from service.api.app import create_app
from service.config import Settings

REPO = Path(__file__).resolve().parent.parent
Message = MutableMapping[str, Any]


async def call(app: Any, method: str, path: str, body: bytes) -> int:
    """One request through the whole ASGI stack (middleware included); returns the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    status = 0

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status


async def measure(
    request: Callable[[], Awaitable[int]], concurrency: int, n: int
) -> dict[str, float]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            status = await request()
            if status != 200:
                raise RuntimeError(f"status {status}")

    loop0, cpu0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    loop1, cpu1, wall1 = time.thread_time(), time.process_time(), time.perf_counter()
    loop_us = 1e6 * (loop1 - loop0) / n
    return {
        "loop_us": loop_us,
        "others_us": 1e6 * (cpu1 - cpu0) / n - loop_us,
        "wall_us": 1e6 * (wall1 - wall0) / n,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="diabetes")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    args = ap.parse_args()

    model_dir = Path(tempfile.mkdtemp(prefix="mcdrop-loop-cost-"))
    try:
        if args.model == "ref":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from serve_load import write_reference_model

            write_reference_model(model_dir / "ref")
        else:
            shutil.copytree(REPO / "models" / args.model, model_dir / args.model)
        await run(args, model_dir)
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


async def run(args: argparse.Namespace, model_dir: Path) -> None:
    app = create_app(Settings(model_dir=str(model_dir), batching=True, referrals=False))
    async with app.router.lifespan_context(app):
        row = [0.01] * app.state.predictor.model(args.model).manifest.input_size
        rows = [row] * args.rows
        body = json.dumps({"inputs": rows, "samples": 100}).encode()  # a fresh seed each
        path = f"/v1/models/{args.model}/predict"
        v2_body = json.dumps(
            {
                "parameters": {"samples": 100},
                "inputs": [
                    {
                        "name": "input",
                        "shape": [args.rows, len(row)],
                        "datatype": "FP64",
                        "data": rows,
                    }
                ],
                "outputs": [{"name": n} for n in ("mean", "variance", "uncertainty", "abstain")],
            }
        ).encode()
        v2_path = f"/v2/models/{args.model}/infer"
        variants: dict[str, Callable[[], Awaitable[int]]] = {
            "trivial": lambda: call(app, "GET", "/health/live", b""),
            "predict": lambda: call(app, "POST", path, body),
            "v2": lambda: call(app, "POST", v2_path, v2_body),
        }
        for request in variants.values():  # warm-up
            await measure(request, args.concurrency, 200)
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            for name, request in variants.items():
                runs[name].append(await measure(request, args.concurrency, args.requests))

    med = {k: {m: statistics.median(r[m] for r in rs) for m in rs[0]} for k, rs in runs.items()}
    print(
        f"{args.model}, concurrency {args.concurrency}, N={args.rows}, T=100, batcher on "
        f"(medians of {args.repeats}), microseconds per request:"
    )
    print(f"{'':10}{'loop':>8}{'others':>8}{'wall':>8}")
    for name, m in med.items():
        print(f"{name:10}{m['loop_us']:8.0f}{m['others_us']:8.0f}{m['wall_us']:8.0f}")
    for name in ("predict", "v2"):
        print(
            f"{name} / trivial: loop {med[name]['loop_us'] / med['trivial']['loop_us']:.2f}, "
            f"wall {med[name]['wall_us'] / med['trivial']['wall_us']:.2f}"
        )


if __name__ == "__main__":
    uvloop.run(main())

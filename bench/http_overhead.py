"""What the HTTP layer costs on top of the library call, as a ratio measured side by side.

    .venv/bin/python bench/http_overhead.py [--model diabetes] [--rows 1] [--samples 100]

Interleaves three variants on the same inputs and seed, and prints medians (ms) and ratios:
  library: load_model(...).predict(...) in this thread;
  runner:  the Predictor path (runner thread + summarize thread), no HTTP;
  http:    POST /v1/models/{name}/predict through the ASGI app (httpx, in process; this
           includes the client's own JSON and request work, so it is an upper bound).
The machine is noisy: read the ratios, not the absolute times, and rerun when in doubt.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx
import numpy as np

from service.api.app import create_app
from service.config import Settings
from service.serving.model import load_model
from service.serving.predictor import PredictParams

REPO = Path(__file__).resolve().parent.parent


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="diabetes")
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()

    model_dir = REPO / "models"
    lib = load_model(model_dir / args.model)
    app = create_app(Settings(model_dir=str(model_dir)))
    x = np.random.default_rng(0).normal(size=(args.rows, lib.manifest.input_size))
    body = {"inputs": x.tolist(), "samples": args.samples, "seed": 0}
    params = PredictParams(samples=args.samples, seed=0)
    times: dict[str, list[float]] = {"library": [], "runner": [], "http": []}
    async with app.router.lifespan_context(app):
        predictor = app.state.predictor
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            url = f"/v1/models/{args.model}/predict"
            for i in range(args.repeats + 10):
                t0 = time.perf_counter()
                lib.predict(x, samples=args.samples, seed=0)
                t1 = time.perf_counter()
                await predictor.infer(args.model, x.tolist(), params)
                t2 = time.perf_counter()
                r = await client.post(url, json=body)
                t3 = time.perf_counter()
                r.raise_for_status()
                if i >= 10:  # warm-up excluded
                    times["library"].append(t1 - t0)
                    times["runner"].append(t2 - t1)
                    times["http"].append(t3 - t2)
    base = statistics.median(times["library"])
    print(f"model={args.model} N={args.rows} T={args.samples} repeats={args.repeats}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:>8}: median {1000 * med:8.2f} ms   ratio to library {med / base:5.2f}")


if __name__ == "__main__":
    asyncio.run(main())

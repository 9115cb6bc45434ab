"""Liveness while the engine is saturated: how long GET /health/live waits, and what holds the loop.

    .venv/bin/python bench/liveness.py [--seconds 8] [--repeats 2] [--concurrency 64]
    .venv/bin/python bench/liveness.py --trace      # also log every loop step over 5 ms

Servers of the app as `mcdrop serve` runs it (guarded protocol, batcher on, one torch thread,
shipped `diabetes` model) on loopback, started alternately per repeat. Each is saturated by a
closed loop of `--concurrency` clients sending 64-row requests at T = 10,000 (`"refer": false`),
while a probe opens a fresh connection for GET /health/live every 50 ms. Variants:
- default: the default settings (with `MCDROP_ENGINE_PROCESS=auto` this light model's passes
  run on a thread of the server process);
- engine-process: its passes in an engine process (`MCDROP_ENGINE_PROCESS=true`);
- switch-1ms: the default, with the GIL switch interval set to 1 ms (default 5 ms).
With --trace the server runs asyncio in debug mode and logs each loop callback that held the loop
for more than 5 ms to bench/results/liveness-trace-<variant>.log, which names what holds it.
Before the saturating load, each server also serves the light model alone (N=1, T=100, c=32):
what the variant costs the fast path. Prints median, p99 and worst probe latency per variant with
both loads' requests/s; writes bench/results/liveness.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from load_http import run_level
from serve_load import free_port, repo_relative, stop_server
from slow_clients import probe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "default": {},
    "engine-process": {"MCDROP_ENGINE_PROCESS": "true"},
    "switch-1ms": {"BENCH_GIL_SWITCH_INTERVAL_MS": "1"},
}


def serve(port: int, model_dir: str, trace: str) -> None:
    """The server process: `mcdrop serve`'s app, optionally logging slow loop steps."""
    import logging

    import uvicorn

    from service.api.app import create_app
    from service.api.protocol import guarded_protocol
    from service.config import Settings

    settings = Settings(model_dir=model_dir, port=port, log_level="warning")
    switch_ms = os.environ.get("BENCH_GIL_SWITCH_INTERVAL_MS")
    if switch_ms:
        sys.setswitchinterval(float(switch_ms) / 1e3)
    app = create_app(settings)
    if trace:
        logging.basicConfig(filename=trace, level=logging.WARNING, format="%(message)s")

        @app.middleware("http")
        async def _debug_loop(request: Any, call_next: Any) -> Any:
            loop = asyncio.get_running_loop()
            if not loop.get_debug():
                loop.set_debug(True)
                loop.slow_callback_duration = 0.005
            return await call_next(request)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        limit_concurrency=settings.max_connections,
        http=guarded_protocol(settings.header_read_timeout_s, settings.body_read_timeout_s),
    )


def start(variant: str, model_dir: Path, port: int, tmp: str, trace: bool) -> Any:
    import subprocess
    import urllib.request

    env = {**os.environ, "MCDROP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env |= {"MCDROP_DATABASE_URL": f"sqlite:///{tmp}/referrals.db"}
    env |= {"MCDROP_REFERRAL_SPOOL": f"{tmp}/spool.jsonl", **VARIANTS[variant]}
    log = str(RESULTS / f"liveness-trace-{variant}.log") if trace else ""
    args = [sys.executable, __file__, "--serve", "--port", str(port), "--trace-file", log]
    args += ["--model-dir", str(model_dir)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"{variant} server not ready within 90 s")


async def light_load(port: int, seconds: float) -> dict[str, Any]:
    """The light model's requests/s at c=32 (N=1, T=100): what the variant costs the fast path."""
    url = f"http://127.0.0.1:{port}/v1/models/diabetes/predict"
    body = json.dumps({"inputs": [[0.01] * 10], "samples": 100, "refer": False}).encode()
    await run_level(url, "POST", body, 32, 1.0)  # warm-up
    return await run_level(url, "POST", body, 32, seconds)


async def saturate_and_probe(
    port: int, body: bytes, concurrency: int, seconds: float
) -> tuple[dict[str, Any], list[float]]:
    url = f"http://127.0.0.1:{port}/v1/models/diabetes/predict"
    load = asyncio.create_task(run_level(url, "POST", body, concurrency, seconds))
    await asyncio.sleep(1.0)  # let the queue fill before probing
    waits: list[float] = []
    while not load.done():
        status, seconds_taken = await probe(port)
        if status == 200:
            waits.append(seconds_taken)
        await asyncio.sleep(0.05)
    return await load, waits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--trace", action="store_true", help="log loop steps over 5 ms")
    ap.add_argument("--out", default=str(RESULTS / "liveness.json"))
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--trace-file", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.port, args.model_dir, args.trace_file)
        return

    rng = np.random.default_rng(0)
    inputs = rng.normal(0, 0.05, (64, 10)).tolist()
    body = json.dumps({"inputs": inputs, "samples": 10_000, "refer": False}).encode()
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcdrop-liveness-") as tmp:
        model_dir = Path(tmp) / "models"
        shutil.copytree(ROOT / "models" / "diabetes", model_dir / "diabetes")
        names = list(VARIANTS)
        for rep in range(args.repeats):
            for variant in names if rep % 2 == 0 else names[::-1]:
                port = free_port()
                proc = start(variant, model_dir, port, tmp, args.trace)
                try:
                    light = asyncio.run(light_load(port, args.seconds / 2))
                    load, waits = asyncio.run(
                        saturate_and_probe(port, body, args.concurrency, args.seconds)
                    )
                finally:
                    stop_server(proc)
                ms = np.array(waits) * 1e3
                run = {"variant": variant, "repeat": rep, "rps": load["rps"], "probes_ms": waits}
                run["light_rps"] = light["rps"]
                run |= {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99))}
                run |= {"max_ms": float(ms.max()), "n_probes": len(waits)}
                runs.append(run)
                print(
                    f"rep {rep} {variant:>10}: light c=32 {light['rps']:6.1f} req/s, "
                    f"saturating {load['rps']:5.1f} req/s | health/live "
                    f"p50 {run['p50_ms']:6.1f} ms  p99 {run['p99_ms']:6.1f} ms  "
                    f"max {run['max_ms']:6.1f} ms over {len(waits)} probes",
                    flush=True,
                )
    report(runs, args, load_start, os.getloadavg())


def report(
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> None:
    print(
        f"\nmedians over {args.repeats} repeats of {args.seconds:.0f} s, c={args.concurrency}, "
        f"64 rows x T=10,000, {os.cpu_count()} cores, load average {load_start[0]:.1f} at "
        f"start, {load_end[0]:.1f} at end"
    )
    summary: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        probes = np.array([p for r in mine for p in r["probes_ms"]]) * 1e3
        summary[variant] = {
            "rps": float(np.median([r["rps"] for r in mine])),
            "light_rps": float(np.median([r["light_rps"] for r in mine])),
            "probe_p50_ms": float(np.median(probes)),
            "probe_p99_ms": float(np.percentile(probes, 99)),
            "probe_max_ms": float(probes.max()),
        }
        s = summary[variant]
        print(
            f"{variant:>10}: light {s['light_rps']:6.1f} req/s, saturating {s['rps']:5.1f} req/s"
            f" | health/live p50 {s['probe_p50_ms']:.1f} ms, "
            f"p99 {s['probe_p99_ms']:.1f} ms, max {s['probe_max_ms']:.1f} ms"
        )
    for variant in list(VARIANTS)[1:]:
        for field, what in (("light_rps", "light model c=32"), ("rps", "saturating load")):
            ratio = summary[variant][field] / summary["default"][field]
            print(f"{variant} / default requests/s, {what}: {ratio:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("serve", "port", "model_dir")}
    settings["out"] = repo_relative(out)
    out.write_text(
        json.dumps(
            {
                "settings": settings,
                "load_average": {"start": load_start[0], "end": load_end[0]},
                "summary": summary,
                "runs": runs,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

"""What the calibration watch costs: the light model (diabetes) served with the watch on and off.

    .venv/bin/python bench/watch_cost.py [--seconds 4] [--repeats 6] [--concurrency 32]

Per repeat, one `mcdrop serve` subprocess with MCDROP_CALIBRATION_WATCH=true and one with false
(the order alternates between repeats), each under closed-loop load at the given concurrency
from bench/load_http.py's raw HTTP/1.1 client: POST /v1/models/diabetes/predict, N=1, T=100.
Referrals are off in both, so the figure is the watch's own cost and not the referral store's
(a stream of one repeated row is far from exchangeable with the held-out scores, so the watch
also goes through its alarm). Servers start with serve_load.py's settings (one engine worker,
OMP_WAIT_POLICY=PASSIVE, log level warning). Reports the medians, the on/off ratio of
requests/s and of server CPU per request, the in-process time of one watch update beside the
server's CPU per request, and the watch's state after the last on run.
Writes bench/results/watch_cost.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from load_http import run_level
from serve_load import ROOT, free_port, server_cpu, start_server, stop_server

OUT = Path(__file__).resolve().parent / "results" / "watch_cost.json"
T = 100


def one_run(model_dir: Path, watch: bool, body: bytes, conc: int, seconds: float) -> dict[str, Any]:
    os.environ["MCDROP_CALIBRATION_WATCH"] = "true" if watch else "false"
    port = free_port()
    proc = start_server(model_dir, batching=True, threads=1, workers=1, port=port)
    url = f"http://127.0.0.1:{port}/v1/models/diabetes/predict"
    try:
        asyncio.run(run_level(url, "POST", body, conc, 1.0))  # warm-up
        c0 = server_cpu(proc.pid)
        r = asyncio.run(run_level(url, "POST", body, conc, seconds))
        r["server_cpu_s"] = server_cpu(proc.pid) - c0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/diabetes") as resp:
            r["calibration_watch"] = json.loads(resp.read())["calibration_watch"]
    finally:
        stop_server(proc)
    r["watch"] = watch
    return r


def observe_seconds(model_dir: Path, body: bytes, calls: int = 20_000) -> float:
    """In process: seconds per `CalibrationWatches.observe` on a real one-row prediction."""
    import time

    from service.engines.runtime import EngineRuntime
    from service.serving.registry import ModelRegistry
    from service.serving.watch import CalibrationWatches

    registry = ModelRegistry(model_dir, runtime=EngineRuntime(device="cpu"))
    registry.load_all()
    model = registry.get("diabetes")
    pred = model.predict(json.loads(body)["inputs"], samples=T, seed=0)
    watches = CalibrationWatches(registry, seed=0)
    watches.observe("diabetes", model, pred)  # the first call starts the test
    t0 = time.perf_counter()
    for _ in range(calls):
        watches.observe("diabetes", model, pred)
    return (time.perf_counter() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    os.environ["MCDROP_REFERRALS"] = "false"
    load_start = os.getloadavg()
    body = json.dumps(
        {"inputs": [[0.01, -0.04, 0.06, 0.02, -0.04, -0.03, -0.04, 0.0, 0.02, -0.02]], "samples": T}
    ).encode()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcdrop-watch-") as tmp:
        model_dir = Path(tmp)
        shutil.copytree(ROOT / "models" / "diabetes", model_dir / "diabetes")
        for rep in range(args.repeats):
            for watch in (True, False) if rep % 2 == 0 else (False, True):
                r = one_run(model_dir, watch, body, args.concurrency, args.seconds)
                r["repeat"] = rep
                runs.append(r)
                print(
                    f"rep {rep} watch {'on ' if watch else 'off'} {r['rps']:8.1f} req/s  "
                    f"p99 {r['p99_ms']:7.2f} ms  server CPU {r['server_cpu_s']:.2f}s  "
                    f"client CPU {r['client_cpu_s']:.2f}s  errors {r['errors']}",
                    flush=True,
                )
        observe_s = observe_seconds(model_dir, body)
    load_end = os.getloadavg()

    def med(watch: bool, key: str) -> float:
        return float(np.median([r[key] for r in runs if r["watch"] is watch]))

    def cpu_per_request(watch: bool) -> float:
        return float(
            np.median([r["server_cpu_s"] / r["requests"] for r in runs if r["watch"] is watch])
        )

    # Paired by repeat: each on run against the off run beside it, then the median ratio.
    pairs = [
        next(r["rps"] for r in runs if r["repeat"] == rep and r["watch"])
        / next(r["rps"] for r in runs if r["repeat"] == rep and not r["watch"])
        for rep in range(args.repeats)
    ]
    summary = {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "rps_on": med(True, "rps"),
        "rps_off": med(False, "rps"),
        "rps_ratio_on_over_off_paired_median": float(np.median(pairs)),
        "rps_ratio_pairs": pairs,
        "server_cpu_ms_per_request_on": cpu_per_request(True) * 1e3,
        "server_cpu_ms_per_request_off": cpu_per_request(False) * 1e3,
        "observe_us_in_process": observe_s * 1e6,
        "observe_over_server_cpu_per_request_off": observe_s / cpu_per_request(False),
        "p99_ms_on": med(True, "p99_ms"),
        "p99_ms_off": med(False, "p99_ms"),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "last_watch_state": next(r["calibration_watch"] for r in reversed(runs) if r["watch"]),
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "last_watch_state"}, indent=2))
    print(
        "watch after the last on run:",
        summary["last_watch_state"]["status"],
        "tested",
        summary["last_watch_state"]["requests_tested"],
    )
    Path(args.out).write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()

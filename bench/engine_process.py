"""Passes in engine processes against passes on threads of the server process, side by side.

    .venv/bin/python bench/engine_process.py [--seconds 5] [--repeats 3]

What it does, on loopback (127.0.0.1, a free port), bounded in time and request count:
- alternates three `mcdrop serve` servers, `MCDROP_ENGINE_PROCESS=true`, `false` and `auto`
  (the default), each started afresh for every repeat, the order rotating between repeats; each
  serves a copy of the shipped `diabetes` model and the reference MLP of bench/serve_load.py
  (Q=64, 3x1024, D=10), with one torch thread and one engine worker, a fresh SQLite referral
  store and spool, OMP_WAIT_POLICY=PASSIVE;
- on each server, closed-loop load from the raw HTTP/1.1 client of bench/load_http.py, N=1,
  T=100, every row abstaining and referred (`"threshold": -1`): diabetes at concurrency 32 and
  1, the reference MLP at concurrency 32, and diabetes at concurrency 1 with `"refer": false`,
  where no referral's fsync hides the round trip to the engine process;
- for the reference MLP, its compute ceiling (the mask-free chain of 32 requests, one thread)
  measured just before and after each server runs, as the host's speed drifts.
Prints, per load, the medians, the ratios engine process / in process and auto / in process
of the requests/s, and the reference MLP's fraction of its ceiling under each; writes
bench/results/engine_process.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from load_http import run_level
from serve_load import (
    Q,
    compute_ceiling,
    free_port,
    repo_relative,
    server_cpu,
    start_server,
    stop_server,
    write_reference_model,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results" / "engine_process.json"
T = 100
# (model, concurrency, referred): with "refer": false a lone light request shows the round trip
# to the engine process without the referral's fsync beside it.
LOADS = [("diabetes", 32, True), ("diabetes", 1, True), ("diabetes", 1, False), ("ref", 32, True)]
MODES = {"process": "true", "in_process": "false", "auto": "auto"}


def body(model: str, referred: bool = True) -> bytes:
    rng = np.random.default_rng(0)
    row = rng.normal(0, 0.05, (1, 10)) if model == "diabetes" else rng.standard_normal((1, Q))
    request = {"inputs": row.tolist(), "samples": T, "threshold": -1}
    return json.dumps(request if referred else request | {"refer": False}).encode()


def label(name: str, conc: int, referred: bool) -> str:
    return f"{name:>8} c={conc:<2} {'referred' if referred else 'refer:false':>11}"


def run_server(
    mode: str, model_dir: Path, tmp: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    port = free_port()
    env = {
        "MCDROP_DATABASE_URL": f"sqlite:///{tmp}/referrals-{mode}.db",
        "MCDROP_REFERRAL_SPOOL": f"{tmp}/referrals-{mode}.spool.jsonl",
        "MCDROP_ENGINE_PROCESS": MODES[mode],
    }
    proc = start_server(model_dir, True, 1, 1, port, env)
    out = []
    try:
        for name in ("diabetes", "ref"):  # warm-up of both models
            url = f"http://127.0.0.1:{port}/v1/models/{name}/predict"
            asyncio.run(run_level(url, "POST", body(name), 32, 1.0, 5000))
        for name, conc, referred in LOADS:
            url = f"http://127.0.0.1:{port}/v1/models/{name}/predict"
            c0 = server_cpu(proc.pid)
            r = asyncio.run(
                run_level(url, "POST", body(name, referred), conc, args.seconds, 50_000)
            )
            r |= {"mode": mode, "model": name, "referred": referred}
            r["server_cpu_s"] = server_cpu(proc.pid) - c0
            out.append(r)
            print(
                f"{mode:>10} {label(name, conc, referred)} {r['rps']:7.1f} req/s  "
                f"p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}  "
                "server CPU (with its "
                f"children) {1e3 * r['server_cpu_s'] / max(r['requests'], 1):.2f} ms/request",
                flush=True,
            )
    finally:
        stop_server(proc)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per load")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcdrop-engine-process-") as tmp_name:
        tmp = Path(tmp_name)
        model_dir = tmp / "models"
        shutil.copytree(ROOT / "models" / "diabetes", model_dir / "diabetes")
        net = write_reference_model(model_dir / "ref")
        ceiling = compute_ceiling(net, 1, 1, 2.0)
        for rep in range(args.repeats):
            order = list(MODES)[rep % len(MODES) :] + list(MODES)[: rep % len(MODES)]
            for mode in order:
                server_runs = run_server(mode, model_dir, tmp, args)
                after = compute_ceiling(net, 1, 1, 2.0)
                for r in server_runs:
                    r["repeat"] = rep
                    if r["model"] == "ref":
                        r["ceiling_rps"] = (ceiling + after) / 2
                ceiling = after
                runs += server_runs
    report(runs, args, load_start, os.getloadavg())


def report(
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> None:
    print(
        f"\nmedians of {args.repeats} repeats, {args.seconds:.0f} s each, N=1, T={T}, "
        f"{os.cpu_count()} cores, load average {load_start[0]:.1f} at start, "
        f"{load_end[0]:.1f} at end"
    )
    checks: dict[str, float] = {}
    for name, conc, referred in LOADS:
        med = {}
        for mode in MODES:
            key = (mode, name, conc, referred)
            sel = [
                r for r in runs if (r["mode"], r["model"], r["concurrency"], r["referred"]) == key
            ]
            med[mode] = {
                k: float(np.median([r[k] for r in sel])) for k in ("rps", "p50_ms", "p99_ms")
            }
            line = f"{label(name, conc, referred)} {mode:>10}: {med[mode]['rps']:7.1f} req/s  p50 "
            line += f"{med[mode]['p50_ms']:6.2f}  p99 {med[mode]['p99_ms']:6.2f} ms"
            if name == "ref":
                frac = float(np.median([r["rps"] / r["ceiling_rps"] for r in sel]))
                checks[f"ref_c{conc}_{mode}_over_ceiling"] = frac
                line += f"  /ceiling {frac:.2f}"
            print(line)
        tag = "" if referred else "_refer_false"
        for mode in ("process", "auto"):
            ratio = med[mode]["rps"] / med["in_process"]["rps"]
            checks[f"{name}_c{conc}{tag}_{mode}_over_in_process_rps"] = ratio
    print()
    for k, v in checks.items():
        print(f"{k:>52}: {v:5.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = vars(args) | {"T": T, "N": 1, "cores": os.cpu_count(), "out": repo_relative(out)}
    settings |= {"load_average_start": load_start, "load_average_end": load_end}
    out.write_text(json.dumps({"settings": settings, "checks": checks, "runs": runs}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The same load against two source trees of mcdrop, interleaved in one run: a regression check.

    git worktree add /tmp/mcdrop-before <commit>
    .venv/bin/python bench/compare_trees.py /tmp/mcdrop-before . [--seconds 4] [--repeats 3]

Per repeat (the order alternates), one `mcdrop serve` per tree (PYTHONPATH set to the tree, so
its `service` package is the one imported; batcher on, one torch thread, OMP_WAIT_POLICY=PASSIVE,
log level warning) serves the same temporary model folder: the reference MLP of
bench/serve_load.py and a copy of the shipped `diabetes` model. Against each: closed-loop load
from the raw HTTP/1.1 client of bench/load_http.py on POST /v1/models/{diabetes,ref}/predict
(N=1, T=100, `"refer": false`) at concurrency 1 and 32, and GET /health/live at 32.
Prints the medians, and after / before for requests/s and for the server's CPU per request (the
steadier figure on a shared machine); writes bench/results/compare_trees.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from load_http import run_level
from serve_load import (
    Q,
    free_port,
    server_cpu,
    start_server,
    stop_server,
    write_reference_model,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "results" / "compare_trees.json"
T = 100
LOADS = [("diabetes", 1), ("diabetes", 32), ("ref", 32), ("http", 32)]


def measure(port: int, proc: Any, bodies: dict[str, bytes], seconds: float) -> list[dict[str, Any]]:
    base = f"http://127.0.0.1:{port}"
    rows = []
    for target, conc in LOADS:
        url, method = f"{base}/v1/models/{target}/predict", "POST"
        if target == "http":
            url, method = f"{base}/health/live", "GET"
        body = bodies.get(target, b"")
        asyncio.run(run_level(url, method, body, conc, min(1.0, seconds / 4)))  # warm-up
        c0 = server_cpu(proc.pid)
        r = asyncio.run(run_level(url, method, body, conc, seconds, 50_000))
        r["server_cpu_ms_per_request"] = 1e3 * (server_cpu(proc.pid) - c0) / max(r["requests"], 1)
        rows.append(r | {"target": target})
    return rows


def _commit(tree: str) -> str:
    """The tree's HEAD commit, with "+changes" when its working tree differs from it."""
    head = subprocess.run(
        ["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "-C", tree, "status", "--porcelain"], capture_output=True)
    return (head or "unknown") + ("+changes" if dirty.stdout.strip() else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("before", help="source tree of the earlier commit")
    ap.add_argument("after", help="source tree of the later commit")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    trees = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    commits = {label: _commit(path) for label, path in trees.items()}
    rng = np.random.default_rng(0)
    bodies = {
        "diabetes": {"inputs": rng.normal(0, 0.05, (1, 10)).tolist(), "samples": T},
        "ref": {"inputs": rng.standard_normal((1, Q)).tolist(), "samples": T},
    }
    encoded = {k: json.dumps(v | {"refer": False}).encode() for k, v in bodies.items()}
    load_start = os.getloadavg()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcdrop-trees-") as tmp:
        model_dir = Path(tmp)
        write_reference_model(model_dir / "ref")
        shutil.copytree(ROOT / "models" / "diabetes", model_dir / "diabetes")
        for rep in range(args.repeats):
            for label in ("before", "after") if rep % 2 == 0 else ("after", "before"):
                port = free_port()
                env = {"PYTHONPATH": trees[label]}
                proc = start_server(model_dir, True, 1, 1, port, extra_env=env)
                try:
                    rows = measure(port, proc, encoded, args.seconds)
                finally:
                    stop_server(proc)
                for r in rows:
                    runs.append(r | {"tree": label, "repeat": rep})
                    print(
                        f"rep {rep} {label:>6} {r['target']:>8} c={r['concurrency']:<3}"
                        f"{r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  server CPU "
                        f"{r['server_cpu_ms_per_request']:.2f} ms/req",
                        flush=True,
                    )
    report(runs, args, commits, load_start, os.getloadavg())


def report(
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    commits: dict[str, str],
    load_start: tuple[float, float, float],
    load_end: tuple[float, float, float],
) -> None:
    def pick(label: str, target: str, conc: int, field: str) -> float:
        values = [
            r[field]
            for r in runs
            if r["tree"] == label and r["target"] == target and r["concurrency"] == conc
        ]
        return float(np.median(values))

    print(
        f"\nmedians of {args.repeats} repeats, {args.seconds:.0f} s each, N=1, T={T}, "
        f"{os.cpu_count()} cores, load average {load_start[0]:.1f} at start, "
        f"{load_end[0]:.1f} at end"
    )
    print("target     c   before req/s  after req/s  after/before  CPU/req after/before")
    summary = {}
    for target, conc in LOADS:
        b, a = pick("before", target, conc, "rps"), pick("after", target, conc, "rps")
        cb = pick("before", target, conc, "server_cpu_ms_per_request")
        ca = pick("after", target, conc, "server_cpu_ms_per_request")
        summary[f"{target}_c{conc}"] = {"rps_ratio": a / b, "cpu_per_request_ratio": ca / cb}
        print(f"{target:>8} {conc:>3} {b:13.1f} {a:12.1f} {a / b:13.3f} {ca / cb:21.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        # The trees by commit, not by path: a path outside the repository means nothing elsewhere.
        "settings": {"seconds": args.seconds, "repeats": args.repeats, "commits": commits},
        "load_average": {"start": load_start[0], "end": load_end[0]},
        "summary": summary,
        "runs": runs,
    }
    out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""The torch engine on a CUDA device: correctness checks (exit status) and speed figures (JSON).

Run by bench/gpu.sh, which installs the service's missing packages first. Checks, each a line
of output and an entry under "checks" (any failure: exit status 1):
- masks: the CUDA mask words equal numpy's, bit for bit; Gaussian noise to float tolerance;
- same seed twice, batched == alone, chunk invariance (a 1 MB budget against 4 GB), an adaptive
  round of some rows == those rows of the fixed run, and CPU == GPU samples, on the reference MLP
  and on the shipped Fashion-MNIST convnet;
- the caller's module stays on the CPU; a TF32 engine leaves the process's matmul precision as
  it found it.
Figures, under "figures": achieved TFLOP/s of the MC pass against the mask-free chain of the same
products for float32, TF32 and bf16; the convnet's pass against its chain; HTTP requests/s at
concurrency 64 against the GPU compute ceiling (see `http_serving`).

    python bench/gpu_check.py --out results.json [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from load_http import run_level
from perf import reference_mlp
from serve_load import free_port, stop_server, write_reference_model
from torch import nn

from service.engines import masks, torch_masks
from service.engines.base import SampleJob
from service.engines.nets import MCDropout
from service.engines.runtime import EngineRuntime
from service.engines.torch_engine import TorchEngine
from service.serving.model import load_model

ROOT = Path(__file__).resolve().parent.parent
REF_FLOP_PER_ROW = 2 * (64 * 1024 + 2 * 1024 * 1024 + 1024 * 10)
results: dict[str, Any] = {"checks": {}, "figures": {}}
DEVICE = "cuda"  # --device cpu: a dry run of the script itself where there is no GPU
QUICK = False


def check(name: str, ok: bool, **detail: Any) -> None:
    results["checks"][name] = {"ok": bool(ok), **detail}
    print(f"  {'OK  ' if ok else 'FAIL'} {name} {detail if detail else ''}", flush=True)


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.abs(b).max()) or 1.0
    return float(np.abs(a.astype(np.float64) - b).max() / scale)


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(f: Callable[[], object], reps: int = 15) -> float:
    f()
    sync()
    ts = []
    for _ in range(2 if QUICK else reps):
        t = time.perf_counter()
        f()
        sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def mask_checks() -> None:
    rows = masks.make_rows(11, np.arange(4000) % 50, np.arange(4000))
    same, gauss = True, 0.0
    for elements in (10, 1024, 12544):
        words = masks.words_per_slot(elements, "bernoulli")
        bases = torch_masks.bases_tensor(rows.bases(1, words), DEVICE)
        gpu = torch_masks.mask_words(bases, words).cpu().numpy().view(np.uint64)
        same &= bool(np.array_equal(gpu, masks.mask_words(rows, 1, words)))
        g_bases = torch_masks.bases_tensor(rows.bases(1, elements), DEVICE)
        g = torch_masks.gaussian_noise(g_bases, elements, 0.9).cpu().numpy()
        gauss = max(gauss, max_rel(g, masks.gaussian_noise(rows, 1, elements, 0.9)))
    check("mask words cuda == numpy (bits)", same)
    check("gaussian noise cuda == numpy", gauss < 1e-6, max_rel=gauss)


def engine_checks(name: str, cpu: Any, gpu: Any, gpu_small: Any, x: np.ndarray) -> None:
    """Same seed, batched == alone, chunking, adaptive rounds and CPU == GPU for one network."""
    other = np.random.default_rng(9).standard_normal(x.shape).astype(np.float32)[:2]
    job = SampleJob(x, 40, seed=3)
    a = gpu.sample_many([job])[0]
    b = gpu.sample_many([job])[0]
    check(f"{name}: same seed, same samples", max_rel(a, b) < 1e-6, max_rel=max_rel(a, b))
    batched = gpu.sample_many([SampleJob(other, 17, seed=5), job])[1]
    check(f"{name}: batched == alone", max_rel(batched, a) < 1e-4, max_rel=max_rel(batched, a))
    chunked = gpu_small.sample_many([job])[0]
    check(f"{name}: chunked == whole", max_rel(chunked, a) < 1e-4, max_rel=max_rel(chunked, a))
    open_rows = np.array([x.shape[0] - 1, 0])
    part = SampleJob(x[open_rows], 24, seed=3, first_sample=16, row_ids=open_rows)
    got = gpu.sample_many([part])[0]
    want = a[16:40][:, open_rows]
    check(
        f"{name}: adaptive round == fixed run",
        max_rel(got, want) < 1e-4,
        max_rel=max_rel(got, want),
    )
    c = cpu.sample_many([job])[0]
    check(f"{name}: cpu == gpu", max_rel(a, c) < 1e-3, max_rel=max_rel(a, c))


def mlp_checks() -> nn.Sequential:
    net = reference_mlp(64)
    cpu = TorchEngine(net, [64], EngineRuntime(device="cpu"))
    gpu = TorchEngine(net, [64], EngineRuntime(device=DEVICE, max_activation_mb=4096))
    small = TorchEngine(net, [64], EngineRuntime(device=DEVICE, max_activation_mb=1))
    check("caller's module stays on the cpu", next(net.parameters()).device.type == "cpu")
    x = np.random.default_rng(0).standard_normal((6, 64)).astype(np.float32)
    engine_checks("reference MLP", cpu, gpu, small, x)
    before = torch.get_float32_matmul_precision()
    if DEVICE == "cuda":
        TorchEngine(net, [64], EngineRuntime(device=DEVICE, precision="tf32")).sample_many(
            [SampleJob(x, 8, 1)]
        )
    after = torch.get_float32_matmul_precision()
    check("tf32 engine leaves matmul precision alone", before == after, before=before, after=after)
    return net


def convnet_checks() -> None:
    folder = ROOT / "models" / "fashion-mnist"
    cpu = load_model(folder, device="cpu")
    gpu = load_model(folder, device=DEVICE, max_activation_mb=4096)
    small = load_model(folder, device=DEVICE, max_activation_mb=2)
    pixels = np.random.default_rng(0).integers(0, 256, size=(6, 784)).astype(np.float64)
    x = cpu.prepare(pixels)
    engine_checks("fashion convnet", cpu.engine, gpu.engine, small.engine, x)
    n, t = (8, 10) if QUICK else (256, 100)
    xs = gpu.prepare(np.random.default_rng(1).integers(0, 256, size=(n, 784)).astype(np.float64))
    stacked = np.tile(xs, (t, 1, 1, 1))
    mc = timed(lambda: gpu.engine.sample_many([SampleJob(xs, t, 1)]), reps=5)
    chain = timed(lambda: gpu.engine.deterministic(stacked), reps=5)
    results["figures"]["convnet"] = {
        "N": n,
        "T": t,
        "mc_ms": mc * 1e3,
        "chain_ms": chain * 1e3,
        "chain_over_mc": chain / mc,
    }
    print(
        f"  convnet N={n} T={t}: MC {mc * 1e3:.1f} ms, chain {chain * 1e3:.1f} ms, "
        f"chain/MC {chain / mc:.2f}",
        flush=True,
    )


def tflops(net: nn.Sequential) -> None:
    rows: list[dict[str, Any]] = []
    for precision in ("float32", "tf32", "bf16") if DEVICE == "cuda" else ("float32",):
        runtime = EngineRuntime(device=DEVICE, max_activation_mb=8192, precision=precision)
        eng = TorchEngine(net, [64], runtime)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        plain = nn.Sequential(*[m for m in net if not isinstance(m, MCDropout)])
        plain = plain.to(DEVICE, dtype).eval()  # a copy: net itself is the CPU reference
        for n, t in [(32, 50)] if QUICK else [(32, 50), (256, 30), (1024, 100)]:
            xn = np.random.default_rng(1).standard_normal((n, 64)).astype(np.float32)
            stacked = torch.from_numpy(np.tile(xn, (t, 1))).to(DEVICE, dtype)
            torch.set_float32_matmul_precision("high" if precision == "tf32" else "highest")
            try:
                with torch.inference_mode():
                    chain = timed(lambda: plain(stacked).float().cpu())  # noqa: B023
            finally:
                torch.set_float32_matmul_precision("highest")
            mc = timed(lambda: eng.sample_many([SampleJob(xn, t, 1)]))  # noqa: B023
            flop = n * t * REF_FLOP_PER_ROW
            row = {
                "precision": precision,
                "N": n,
                "T": t,
                "mc_tflops": flop / mc / 1e12,
                "chain_tflops": flop / chain / 1e12,
                "mc_over_chain": chain / mc,
            }
            rows.append(row)
            print(
                f"  {precision:>7} N={n:<5} T={t:<4} MC {row['mc_tflops']:7.2f} TFLOP/s, "
                f"chain {row['chain_tflops']:7.2f}, MC/chain {row['mc_over_chain']:.2f}",
                flush=True,
            )
    results["figures"]["tflops"] = rows
    main = [r for r in rows if (r["N"], r["T"]) == (1024, 100)]
    results["targets"] = results.get("targets", {})
    results["targets"]["mc >= 0.5 chain at (1024, 100)"] = {
        r["precision"]: r["mc_over_chain"] >= 0.5 for r in main
    }


def http_serving(seconds: float) -> None:
    """Requests/s at concurrency 64 (N=1, T=100 on the reference MLP) against the ceiling.

    Ceiling: 64 requests' rows (64 x 100) through the mask-free chain on the GPU, nothing else,
    as requests/s. The batcher forms batches of up to MCDROP_BATCH_MAX_ROWS = 64 rows.
    """
    tmp = Path(tempfile.mkdtemp(prefix="mcdrop-gpu-"))
    net = write_reference_model(tmp / "models" / "ref")
    plain = nn.Sequential(*[m for m in net if not isinstance(m, MCDropout)]).to(DEVICE).eval()
    x = torch.randn(64 * 100, 64, device=DEVICE)
    with torch.inference_mode():
        chain = timed(lambda: plain(x).cpu())
    ceiling = 64 / chain
    port = free_port()
    env = {
        **os.environ,
        "MCDROP_MODEL_DIR": str(tmp / "models"),
        "MCDROP_HOST": "127.0.0.1",
        "MCDROP_PORT": str(port),
        "MCDROP_DEVICE": DEVICE,
        "MCDROP_LOG_LEVEL": "warning",
        "MCDROP_REFERRALS": "false",
        "MCDROP_DATABASE_URL": f"sqlite:///{tmp}/ref.db",
        "MCDROP_REFERRAL_SPOOL": str(tmp / "spool.jsonl"),
        "MCDROP_MAX_QUEUED_REQUESTS": "256",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    cmd = [sys.executable, "-m", "service.cli", "serve"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        body = json.dumps(
            {"inputs": np.random.default_rng(0).standard_normal((1, 64)).tolist(), "samples": 100}
        ).encode()
        url = f"http://127.0.0.1:{port}/v1/models/ref/predict"
        asyncio.run(run_level(url, "POST", body, 64, 2.0))  # warm-up
        r = asyncio.run(run_level(url, "POST", body, 64, seconds))
    finally:
        stop_server(proc)
    r.update({"ceiling_rps": ceiling, "over_ceiling": r["rps"] / ceiling})
    results["figures"]["http_c64"] = r
    results.setdefault("targets", {})["http >= 0.8 ceiling at c=64"] = r["over_ceiling"] >= 0.8
    check("http: no errors under load", r["errors"] == 0, errors=r["errors"])
    print(
        f"  http c=64: {r['rps']:.0f} req/s, ceiling {ceiling:.0f}, "
        f"ratio {r['over_ceiling']:.2f}, p99 {r['p99_ms']:.1f} ms, client CPU "
        f"{r['client_cpu_s']:.1f} s",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--device", default="cuda", help="cpu: a quick dry run of this script")
    args = ap.parse_args()
    global DEVICE, QUICK
    DEVICE, QUICK = args.device, args.device != "cuda"
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("bench/gpu_check.py: torch sees no CUDA device", file=sys.stderr)
        return 2
    results["device"] = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (dry run)"
    results["torch"] = torch.__version__
    print(results["device"], "torch", torch.__version__, flush=True)
    steps: list[tuple[str, Callable[[], object]]] = [
        ("masks", mask_checks),
        ("reference MLP", mlp_checks),
        ("convnet", convnet_checks),
        ("tflops", lambda: tflops(reference_mlp(64))),
        ("http", lambda: http_serving(args.seconds)),
    ]
    for name, step in steps:
        print(f"== {name}", flush=True)
        try:
            step()
        except Exception as e:  # one broken step must not hide the others' results
            check(f"{name}: ran", False, error=f"{type(e).__name__}: {e}")
        Path(args.out).write_text(json.dumps(results, indent=2, default=float) + "\n")
    failed = [k for k, v in results["checks"].items() if not v["ok"]]
    print(
        f"{len(results['checks']) - len(failed)} checks passed, {len(failed)} failed; "
        f"targets: {results.get('targets')}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Part f: the torch engine on a CUDA card, in under 5 minutes. Not run in CI (no GPU here).
#   1. statistical agreement of CUDA samples with the CPU engine (independent seeds: means within
#      5 standard errors, variance ratio within 1 +- 0.1 at T=4000);
#   2. achieved TFLOP/s of the MC forward against the mask-free chain of the same products, for
#      float32, TF32 and bf16, at (N, T) = (32, 50), (256, 30), (1024, 100).
# Usage: bench/gpu.sh   (from the repository root, with .venv holding a CUDA build of torch)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
timeout 300 "$PY" - <<'PY'
import sys, time, numpy as np, torch
from torch import nn
sys.path.insert(0, "bench")
from perf import reference_mlp
from service.engines.base import SampleJob
from service.engines.torch_engine import TorchEngine
from service.nets import MCDropout

if not torch.cuda.is_available():
    sys.exit("bench/gpu.sh: torch sees no CUDA device")
print(torch.cuda.get_device_name(0), "torch", torch.__version__)
net = reference_mlp(64)
cpu = TorchEngine(net, [64], "cpu")
gpu = TorchEngine(net, [64], "cuda", max_activation_mb=4096)
x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
T = 4000
a = cpu.sample_many([SampleJob(x, T, 1)])[0].astype(np.float64)
b = gpu.sample_many([SampleJob(x, T, 2)])[0].astype(np.float64)
z = np.abs(a.mean(0) - b.mean(0)) / np.sqrt((a.var(0) + b.var(0)) / T)
ratio = b.var(0) / a.var(0)
ok = z.max() < 5 and np.abs(ratio - 1).max() < 0.1
print(f"agreement: max z {z.max():.2f} (< 5), variance ratio {ratio.min():.3f}-{ratio.max():.3f}"
      f" -> {'OK' if ok else 'FAIL'}")

flop_per_row = 2 * (64 * 1024 + 2 * 1024 * 1024 + 1024 * 10)
def timed(f, reps=20):
    f(); torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))

for precision in ("float32", "tf32", "bf16"):
    eng = TorchEngine(net, [64], "cuda", max_activation_mb=4096, precision=precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    plain = nn.Sequential(*[m for m in net if not isinstance(m, MCDropout)]).cuda().to(dtype)
    for n, t in [(32, 50), (256, 30), (1024, 100)]:
        xn = np.random.default_rng(1).standard_normal((n, 64)).astype(np.float32)
        stacked = torch.from_numpy(np.tile(xn, (t, 1))).cuda().to(dtype)
        with torch.inference_mode():
            mc = timed(lambda: eng.sample_many([SampleJob(xn, t, 1)]))
            chain = timed(lambda: plain(stacked).float().cpu())
        tf = lambda s: n * t * flop_per_row / s / 1e12
        print(f"{precision:>7} N={n:<5} T={t:<4} MC {mc*1e3:8.2f} ms {tf(mc):7.2f} TFLOP/s | "
              f"chain {chain*1e3:8.2f} ms {tf(chain):7.2f} TFLOP/s | ratio {mc/chain:.2f}")
    torch.backends.cuda.matmul.allow_tf32 = False
PY
# Graph models (package_torch / import-onnx) run on onnxruntime's CUDA provider when installed.
timeout 300 "$PY" bench/gpu_byom.py

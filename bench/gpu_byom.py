"""Graph models (package_torch / import-onnx) on a CUDA card, through onnxruntime's CUDA provider.

Checks: the same seed gives the same samples; CUDA samples equal the CPU engine's for the same
seed (the masks are drawn on the CPU either way, so only float rounding differs); and times the
reference MLP at (N, T) = (32, 50) and (1024, 100) on both. Exits 1 when a check fails, and 0
with a note when this onnxruntime has no CUDA provider (pip install onnxruntime-gpu).

    PY=python3 bench/gpu.sh        # runs this after the torch engine's checks
    python bench/gpu_byom.py --out results.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import reference_mlp

from service.engines.base import SampleJob
from service.serving.model import load_model
from service.training.torch_package import package_torch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if importlib.util.find_spec("onnx") is None:
        print("graph models on CUDA: skipped, the onnx package is not installed here")
        return 0
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        print("graph models on CUDA: skipped, this onnxruntime has no CUDAExecutionProvider")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        folder = package_torch(
            reference_mlp(64), torch.randn(4, 64), Path(tmp) / "mlp", task="classification"
        )
        cpu = load_model(folder, device="cpu").engine
        gpu = load_model(folder, device="cuda").engine
        x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
        a = gpu.sample_many([SampleJob(x, 50, 3)])[0]
        b = gpu.sample_many([SampleJob(x, 50, 3)])[0]
        c = cpu.sample_many([SampleJob(x, 50, 3)])[0]
        checks = {
            "same_seed_same_samples": bool(np.array_equal(a, b)),
            "cuda_equals_cpu": bool(np.allclose(a, c, rtol=1e-3, atol=1e-3)),
        }
        times = {}
        for n, t in [(32, 50), (1024, 100)]:
            xn = np.random.default_rng(1).standard_normal((n, 64)).astype(np.float32)
            for name, eng in (("cpu", cpu), ("cuda", gpu)):
                eng.sample_many([SampleJob(xn, t, 0)])
                t0 = time.perf_counter()
                for _ in range(5):
                    eng.sample_many([SampleJob(xn, t, 0)])
                times[f"{name}_N{n}_T{t}_ms"] = 1e3 * (time.perf_counter() - t0) / 5
    result = {"checks": checks, "times": times, "device": gpu.device}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

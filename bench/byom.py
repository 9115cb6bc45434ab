"""Bring-your-own models against their floors, as ratios measured side by side in one run.

    .venv/bin/python bench/byom.py            # writes bench/results/byom.json
    .venv/bin/python bench/byom.py --quick    # fewer repetitions

  packaged MLP. The reference MLP (Q=64, 3x1024, D=10, dropout 0.1 on the input and after
     every hidden layer), packaged with `package_torch` and served by onnxruntime, against the
     built-in torch engine running the same network, at (N, T) = (1, 100) and (32, 50).
  backbone + head. An MLP backbone (Q=64, 3x1024) and a dropout head (Dropout 0.5, Linear to
     10), packaged, at T=100, against its floor written by hand in torch: one backbone pass on
     the N rows, then the head with dropout on the N*T replicated rows. Beside it: the same
     two onnxruntime passes with no masks at all (a lower bound no MC engine reaches: it draws
     nothing), the naive loop of T full passes in torch with dropout on, and the whole network
     on N*T rows.

Variants run interleaved (A, B, A, B, ...) after a warm-up; each figure is a ratio of medians
of wall time, with process CPU time beside it (steadier when other jobs share the cores).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf import interleaved, reference_mlp

from service.engines.base import Engine, SampleJob
from service.engines.onnx_engine import session_options
from service.engines.runtime import EngineRuntime
from service.engines.torch_engine import TorchEngine
from service.serving.model import load_model
from service.training.torch_package import mc_mode, package_torch

ROOT = Path(__file__).resolve().parent.parent
Q = 64


def packaged(module: nn.Module, folder: Path) -> Engine:
    package_torch(module, torch.randn(4, Q), folder, task="classification", overwrite=True)
    return load_model(folder, device="cpu").engine


def part_mlp(tmp: Path, reps: int) -> list[dict[str, object]]:
    net = reference_mlp(Q)
    ours = packaged(net, tmp / "mlp")
    cpu = EngineRuntime(device="cpu")
    builtin = cpu.calls.run(TorchEngine, net, [Q], cpu)
    rows = []
    for n, t in [(1, 100), (32, 50)]:
        x = np.random.default_rng(0).standard_normal((n, Q)).astype(np.float32)
        job = [SampleJob(x, t, 0)]
        r = interleaved(
            {
                "packaged": functools.partial(ours.sample_many, job),
                "builtin": functools.partial(builtin.sample_many, job),
            },
            reps,
        )
        rows.append(
            _ratio(
                f"packaged MLP / built-in torch engine, (N,T)=({n},{t})",
                r,
                "packaged",
                "builtin",
                target=1.2,
            )
        )
    return rows


class BackboneHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Linear(Q, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
            nn.Linear(1024, 1024),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(1024, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.backbone(x))
        return out


def _session(module: nn.Module, width: int) -> ort.InferenceSession:
    buf = io.BytesIO()
    torch.onnx.export(
        module.eval(),
        (torch.randn(2, width),),
        buf,  # type: ignore[arg-type]
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}},
    )
    return ort.InferenceSession(
        buf.getvalue(), session_options(None), providers=["CPUExecutionProvider"]
    )


def part_head(tmp: Path, reps: int) -> list[dict[str, object]]:
    net = BackboneHead()
    ours = packaged(net, tmp / "head")
    backbone, head = _session(net.backbone, Q), _session(net.head, 1024)
    mc = mc_mode(BackboneHead())
    mc.load_state_dict(net.state_dict())
    rows = []
    t = 100
    for n in (1, 32):
        x = np.random.default_rng(0).standard_normal((n, Q)).astype(np.float32)
        xt = torch.from_numpy(x)
        job = [SampleJob(x, t, 0)]

        def floor(xt: torch.Tensor = xt) -> object:
            with torch.no_grad():
                return mc.head(mc.backbone(xt).repeat(t, 1))

        def no_masks(x: np.ndarray = x) -> object:
            h = backbone.run(["y"], {"x": x})[0]
            return head.run(["y"], {"x": np.tile(h, (t, 1))})[0]

        def naive_loop(xt: torch.Tensor = xt) -> object:
            with torch.no_grad():
                return [mc(xt) for _ in range(t)]

        def naive_batched(xt: torch.Tensor = xt) -> object:
            with torch.no_grad():
                return mc(xt.repeat(t, 1))

        r = interleaved(
            {
                "packaged": functools.partial(ours.sample_many, job),
                "floor": floor,
                "no_masks": no_masks,
                "naive_loop": naive_loop,
                "naive_batched": naive_batched,
            },
            reps,
        )
        label = f"(N,T)=({n},{t})"
        rows.append(
            _ratio(
                f"backbone+head packaged / (1 backbone + {t} head passes), {label}",
                r,
                "packaged",
                "floor",
                target=1.3,
            )
        )
        rows.append(
            _ratio(
                f"backbone+head packaged / the same without masks (onnxruntime), {label}",
                r,
                "packaged",
                "no_masks",
            )
        )
        rows.append(
            _ratio(
                f"naive loop of {t} full passes / packaged, {label}", r, "naive_loop", "packaged"
            )
        )
        rows.append(
            _ratio(f"whole network on N*T rows / packaged, {label}", r, "naive_batched", "packaged")
        )
    return rows


def _ratio(
    what: str, r: dict[str, dict[str, float]], a: str, b: str, target: float | None = None
) -> dict[str, object]:
    row: dict[str, object] = {
        "what": what,
        "wall_ratio": r[a]["wall"] / r[b]["wall"],
        "cpu_ratio": r[a]["cpu"] / r[b]["cpu"],
        f"{a}_ms": 1e3 * r[a]["wall"],
        f"{b}_ms": 1e3 * r[b]["wall"],
    }
    if target is not None:
        row["target"] = target
    print(
        f"{what:72s} wall {row['wall_ratio']:6.2f}  cpu {row['cpu_ratio']:6.2f}"
        + (f"  (target <= {target})" if target else "")
    )
    return row


def main() -> None:
    p = argparse.ArgumentParser(description="bring-your-own benchmark")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "byom.json")
    args = p.parse_args()
    reps = 7 if args.quick else 21
    with tempfile.TemporaryDirectory() as tmp:
        rows = part_mlp(Path(tmp), reps) + part_head(Path(tmp), reps)
    result = {
        "command": "bench/byom.py" + (" --quick" if args.quick else ""),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
        },
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

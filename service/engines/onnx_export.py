"""Export a model folder's network to model.onnx with its dropout masks as graph inputs.

Why masks are inputs rather than random ops inside the graph:
- a plain export drops dropout at inference (onnx#3753, onnxruntime#5549), and onnxruntime's
  default optimisations delete Dropout nodes even with training_mode set (EliminateDropout);
  a mask that is a required input cannot be optimised away;
- the masks come from `masks.py`, the same function of (seed, site, row, sample, element) as
  the torch engine's, so a per-request seed is honoured exactly and a batched request equals
  the lone one.
The graph: x (R rows) -> layers before the first dropout site -> Gather(rows) replicates each row
over its T samples -> at every site, Mul by that site's float mask input (0/1 with 1/keep
folded into the next weight, or Gaussian noise) -> ... -> y (M, D).

The export verifies itself against the torch engine before model.onnx is put in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from service.artifacts.manifest import Manifest, read_manifest
from service.engines.base import SampleJob
from service.engines.nets import MCDropout
from service.engines.runtime import EngineRuntime
from service.engines.torch_engine import TorchEngine, build_from_manifest

ONNX_NAME = "model.onnx"
OPSET = 17


class ExportError(ValueError):
    """The exported graph failed its self-check; model.onnx was not written."""


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, stem: str, value: np.ndarray) -> str:
        n = self.name(stem)
        self.inits.append(numpy_helper.from_array(value, n))
        return n

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def module(self, mod: nn.Module, h: str) -> str:
        if isinstance(mod, nn.Linear):
            w = mod.weight.detach().float().numpy()
            b = mod.bias.detach().float().numpy()
            return self.op("Gemm", [h, self.const("w", w), self.const("b", b)], transB=1)
        if isinstance(mod, nn.Conv2d):
            assert mod.bias is not None  # our convnets always have biases
            w = mod.weight.detach().float().numpy()
            b = mod.bias.detach().float().numpy()
            pad = int(mod.padding[0])
            return self.op("Conv", [h, self.const("w", w), self.const("b", b)], pads=[pad] * 4)
        if isinstance(mod, nn.ReLU):
            return self.op("Relu", [h])
        if isinstance(mod, nn.Tanh):
            return self.op("Tanh", [h])
        if isinstance(mod, nn.MaxPool2d):
            return self.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
        if isinstance(mod, nn.Flatten):
            return self.op("Flatten", [h], axis=1)
        raise ValueError(f"export-onnx: no ONNX translation for layer {mod.__class__.__name__}")


def build_graph(engine: TorchEngine, manifest: Manifest) -> onnx.ModelProto:
    """The engine's folded layers as an ONNX graph with mask inputs (see the module docstring)."""
    b = _Builder()
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["R", *manifest.input_shape])
    rows = helper.make_tensor_value_info("rows", TensorProto.INT64, ["M"])
    inputs = [x, rows]
    h = "x"
    for mod in engine.prefix:
        h = b.module(mod, h)
    h = b.op("Gather", [h, "rows"], axis=0)
    sites = []
    for i, mod in enumerate(engine.body):
        site = engine.sites.get(i)
        if site is None:
            h = b.module(mod, h)
            continue
        assert isinstance(mod, MCDropout)
        shape = list(site.shape)
        name = f"mask_{site.site}"
        inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["M", *shape]))
        h = b.op("Mul", [h, name])
        sites.append({"keep_prob": site.keep_prob, "noise": site.noise, "shape": shape})
    b.nodes.append(helper.make_node("Identity", [h], ["y"]))
    y = helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, ["M", manifest.architecture.output_dim]
    )
    graph = helper.make_graph(b.nodes, f"mcdrop_{manifest.name}", inputs, [y], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    meta = {
        "mcdrop.sites": json.dumps(sites),
        "mcdrop.bytes_per_row": str(engine.bytes_per_row),
        "mcdrop.weights_sha256": manifest.weights.sha256,
    }
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model)
    return model


def export_onnx(folder: Path, samples: int = 2000) -> dict[str, float]:
    """Write folder/model.onnx after checking it against the torch engine; return the checks."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    torch_engine = TorchEngine(
        build_from_manifest(folder, manifest), manifest.input_shape, EngineRuntime(device="cpu")
    )
    model = build_graph(torch_engine, manifest)
    tmp = folder / (ONNX_NAME + ".tmp")
    onnx.save(model, tmp)
    try:
        report = verify(tmp, folder, manifest, torch_engine, samples)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, folder / ONNX_NAME)
    return report


def verify(
    path: Path, folder: Path, manifest: Manifest, torch_engine: TorchEngine, samples: int = 2000
) -> dict[str, float]:
    """Check an exported graph: passes differ, and mean and variance match the torch engine.

    Statistics use independent seeds (onnx seed 1, torch seed 2), so they test the distribution,
    not the shared mask rule. Tolerances: means within 5 standard errors of a difference of two
    T-sample means; variance ratio within 1 +- 0.2 (the sample variance's relative SE is about
    sqrt(2/T) = 0.03 at T=2000 for Gaussian outputs; 0.2 leaves room for heavy tails while still
    catching a lost mask, which cuts the variance several-fold).
    """
    from service.engines.onnx_engine import OnnxEngine

    engine = OnnxEngine(path, folder, manifest, max_activation_mb=256.0)
    probe = np.random.default_rng(0).standard_normal((4, *manifest.input_shape)).astype(np.float32)
    a = engine.sample_many([SampleJob(probe, samples, 1)])[0].astype(np.float64)
    b = torch_engine.sample_many([SampleJob(probe, samples, 2)])[0].astype(np.float64)
    same = torch_engine.sample_many([SampleJob(probe, samples, 1)])[0].astype(np.float64)
    if np.all(a == a[0]):
        raise ExportError(f"{path.name}: all {samples} ONNX passes are identical; dropout is lost")
    se = np.sqrt((a.var(0) + b.var(0)) / samples) + 1e-12
    z = float(np.max(np.abs(a.mean(0) - b.mean(0)) / se))
    ratio = a.var(0).sum(axis=-1) / np.maximum(b.var(0).sum(axis=-1), 1e-30)
    same_seed = float(np.max(np.abs(a - same)))
    report = {
        "mean_max_z": z,
        "variance_ratio_min": float(ratio.min()),
        "variance_ratio_max": float(ratio.max()),
        "same_seed_max_abs_diff": same_seed,
    }
    if z > 5 or ratio.min() < 0.8 or ratio.max() > 1.25:
        raise ExportError(
            f"{path.name}: the ONNX graph does not reproduce the torch engine's MC distribution "
            f"(mean off by up to {z:.1f} SE, variance ratio {ratio.min():.2f}-{ratio.max():.2f}); "
            "a dropout site was probably removed or bypassed"
        )
    scale = float(np.abs(same).max()) + 1.0
    if same_seed > 1e-3 * scale:
        raise ExportError(
            f"{path.name}: with the same seed the ONNX samples differ from torch's by "
            f"{same_seed:.3g}; the graph does not apply the masks it is given"
        )
    return report

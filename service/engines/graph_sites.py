"""Reading a user's ONNX graph and finding its dropout sites, before any rewriting.

A site is a tensor that MC dropout multiplies by a fresh mask: the input of every Dropout node
(any opset: ratio as attribute or input, with or without training_mode), of every mcdrop::Site
node that `package_torch` emits, and any tensor named with `--site TENSOR=RATE`.
Shapes come from running the graph (graph_probe.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import numpy_helper

from service.engines.onnx_engine import first_line

SITE_DOMAIN = "mcdrop"
MAX_GRAPH_BYTES = 2**31 - 1  # protobuf's own limit on one message
# Ops that draw random numbers by themselves: unseeded, so a request's answer could not be
# reproduced, and a mask mcdrop does not draw would escape its seeds.
RANDOM_OPS = {
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Bernoulli",
    "Multinomial",
}
CONTROL_FLOW_OPS = {"Loop", "Scan", "If"}
TORCH_ARCHIVE_SUFFIXES = {".pt2", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib"}
HOW_TO_KEEP_DROPOUT = (
    "export it with its dropout kept: `from service import package_torch` (captures nn.Dropout* "
    "and F.dropout), or, for a network without BatchNorm, torch.onnx.export(..., "
    "training=torch.onnx.TrainingMode.TRAINING); or "
    "name the tensors a dropout followed in training with --site TENSOR=RATE"
)


class ImportRefused(ValueError):
    """This graph cannot be served with faithful MC dropout; nothing was written."""


@dataclass
class SiteSpec:
    """A tensor MC dropout will multiply by a mask, and what its consumers read afterwards."""

    tensor: str  # the activation the mask multiplies
    output: str  # the name the rest of the graph reads the masked activation under
    keep_prob: float
    kind: str  # "element" or "channel"
    source: str  # the node or tensor it came from, for messages and the manifest
    node: onnx.NodeProto | None = None  # the Dropout / mcdrop::Site node it replaces
    shape: tuple[int, ...] = ()  # mask shape per row, set once shapes are known


def read_graph(path: str | Path) -> onnx.ModelProto:
    """Parse an ONNX file; refuse PyTorch archives and pickles (loading them can run code)."""
    p = Path(path)
    if p.suffix.lower() in TORCH_ARCHIVE_SUFFIXES:
        raise ImportRefused(
            f"{p.name}: a '{p.suffix}' file is a PyTorch archive or pickle; mcdrop never loads "
            "those, since loading one can run arbitrary code. Package the module with "
            "`package_torch` or export it to ONNX"
        )
    if not p.is_file():
        raise ImportRefused(f"{p}: no such file")
    if p.stat().st_size > MAX_GRAPH_BYTES:
        raise ImportRefused(f"{p.name}: over 2 GiB, more than one ONNX message can hold")
    data = p.read_bytes()
    if data[:2] == b"PK" or data[:1] == b"\x80":
        raise ImportRefused(
            f"{p.name}: this is a zip archive or a pickle (a .pt2 / torch.save file), not ONNX; "
            "mcdrop never loads those, since loading one can run arbitrary code"
        )
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ImportRefused(f"{p.name}: not an ONNX model ({first_line(e)})") from e
    if not model.graph.node:
        raise ImportRefused(f"{p.name}: not an ONNX model (the graph has no nodes)")
    return model


def check_graph(model: onnx.ModelProto) -> str:
    """The graph's one input's name; refuses what the rewrite cannot keep faithful."""
    g = model.graph
    for t in g.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ImportRefused(
                f"initializer '{t.name}' keeps its data in an external file; only "
                "self-contained graphs are imported (nothing is read from outside the file)"
            )
    for node in g.node:
        if node.op_type in RANDOM_OPS:
            raise ImportRefused(
                f"node '{node.name or node.op_type}' ({node.op_type}) draws unseeded random "
                "numbers; mcdrop draws every mask itself so that a seed reproduces an answer"
            )
        if node.op_type == "BatchNormalization" and _batch_statistics(node):
            raise ImportRefused(
                f"node '{node.name or node.output[0]}' is a BatchNormalization in training mode "
                "(batch statistics): every prediction would depend on the rest of its batch. "
                "Export with BatchNorm in eval mode, e.g. with package_torch"
            )
        if node.op_type in CONTROL_FLOW_OPS:
            raise ImportRefused(
                f"node '{node.name or node.op_type}' is a {node.op_type}: control flow (a loop "
                "of data-dependent length, a branch) cannot be rewritten with one mask per "
                "dropout call; export the network without it"
            )
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ImportRefused(f"the graph has {len(inputs)} inputs {names}; mcdrop serves one")
    x = inputs[0]
    tt = x.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise ImportRefused(f"input '{x.name}' must be float32 (elem_type {tt.elem_type})")
    dims = list(tt.shape.dim)
    if not dims:
        raise ImportRefused(f"input '{x.name}' has no shape; expected (batch, ...)")
    if dims[0].HasField("dim_value"):
        raise ImportRefused(
            f"input '{x.name}' has a static batch dimension ({dims[0].dim_value}); MC dropout "
            "stacks T samples of every row, so the first axis must be dynamic: re-export with "
            f"dynamic_axes={{'{x.name}': {{0: 'batch'}}}}"
        )
    for k, d in enumerate(dims[1:], start=1):
        if not d.HasField("dim_value") or d.dim_value <= 0:
            raise ImportRefused(
                f"input '{x.name}': dimension {k} is not fixed ('{d.dim_param}'); "
                "only the batch dimension may be dynamic"
            )
    return str(x.name)


def _batch_statistics(node: onnx.NodeProto) -> bool:
    """True for a BatchNormalization normalising by its batch (training mode)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return bool(attrs.get("training_mode", 0)) or sum(1 for o in node.output if o) > 1


def pick_output(model: onnx.ModelProto, name: str | None) -> str:
    outs = [o.name for o in model.graph.output]
    if name is not None:
        if name not in outs:
            raise ImportRefused(f"--output '{name}': the graph's outputs are {outs}")
        return str(name)
    if len(outs) != 1:
        raise ImportRefused(f"the graph has outputs {outs}; choose one with --output")
    return str(outs[0])


def _constants(model: onnx.ModelProto) -> dict[str, NDArray[np.generic]]:
    out = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(a.t)
                elif a.name in ("value_float", "value_floats"):
                    out[node.output[0]] = np.asarray(onnx.helper.get_attribute_value(a))
    return out


def find_sites(model: onnx.ModelProto, extra: dict[str, float]) -> list[SiteSpec]:
    """Every dropout site, in graph order; `extra` maps tensor -> drop rate (`--site`)."""
    consts = _constants(model)
    consumed = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    sites: list[SiteSpec] = []
    for node in model.graph.node:
        label = f"{node.op_type} node '{node.name or node.output[0]}'"
        if node.op_type == "Dropout" and node.domain in ("", "ai.onnx"):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if "ratio" in attrs:
                rate = float(attrs["ratio"])
            elif len(node.input) > 1 and node.input[1]:
                if node.input[1] not in consts:
                    raise ImportRefused(f"{label}: its ratio is computed, not a constant")
                rate = float(np.asarray(consts[node.input[1]]).reshape(-1)[0])
            else:
                rate = 0.5  # the operator's default
            if len(node.output) > 1 and node.output[1] and node.output[1] in consumed:
                raise ImportRefused(f"{label}: the graph reads its mask output, which MC cannot")
            kind = "element"
        elif node.domain == SITE_DOMAIN and node.op_type == "Site":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            rate = float(attrs["rate"])
            kind = attrs["kind"].decode() if isinstance(attrs["kind"], bytes) else attrs["kind"]
            label = attrs.get("source", b"").decode() or label
        else:
            continue
        rate = float(f"{rate:.7g}")  # float32 attributes: 0.1 back, not 0.10000000149
        if not 0.0 <= rate < 1.0:
            raise ImportRefused(f"{label}: drop rate {rate} is outside [0, 1)")
        sites.append(SiteSpec(node.input[0], node.output[0], 1.0 - rate, kind, label, node))
    known = {i.name for i in model.graph.input} | {o for n in model.graph.node for o in n.output}
    for tensor, rate in extra.items():
        if tensor not in known:
            sample = sorted(known)[:8]
            raise ImportRefused(f"--site {tensor}: no such tensor in the graph (e.g. {sample})")
        if not 0.0 < rate < 1.0:
            raise ImportRefused(f"--site {tensor}={rate}: the drop rate must be in (0, 1)")
        sites.append(SiteSpec(tensor, tensor, 1.0 - rate, "element", f"tensor '{tensor}'"))
    return sites


__all__ = [
    "HOW_TO_KEEP_DROPOUT",
    "ImportRefused",
    "SiteSpec",
    "check_graph",
    "find_sites",
    "pick_output",
    "read_graph",
]

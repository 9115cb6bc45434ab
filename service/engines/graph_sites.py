"""Reading a user's ONNX graph and finding its dropout sites, before any rewriting.

A site is a tensor that MC dropout multiplies by a fresh mask: the input of every Dropout node
(any opset: ratio as attribute or input, with or without training_mode), of every mcdrop::Site
node that `package_torch` emits, and any tensor named with `--site TENSOR=RATE`.

Shapes come from running the graph itself (onnxruntime, dropout as identity) on 3 and on 5
rows: a tensor whose first axis follows the row count carries rows; anything else (shape
arithmetic, constants) does not. That tells the split where to replicate rows over samples,
and gives every site's per-row shape, without trusting a graph's own shape annotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import numpy_helper

from service.engines.onnx_engine import first_line

SITE_DOMAIN = "mcdrop"
PROBE_ROWS = (3, 5)
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


@dataclass
class Probe:
    """What running the graph on 3 and 5 rows showed."""

    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]  # tensor -> shapes at 3 and 5
    input_shape: list[int]

    def carries_rows(self, name: str) -> bool:
        a, b = self.shapes.get(name, ((), ()))
        return (
            len(a) >= 1 and a[0] == PROBE_ROWS[0] and b[:1] == (PROBE_ROWS[1],) and a[1:] == b[1:]
        )

    def row_shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[name][0][1:]


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


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


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


def eval_graph(model: onnx.ModelProto, sites: list[SiteSpec]) -> onnx.ModelProto:
    """The network in eval mode: every site node (Dropout, mcdrop::Site) as an Identity."""
    g = onnx.ModelProto()
    g.CopyFrom(model)
    site_nodes = {id(s.node) for s in sites if s.node is not None}
    nodes = []
    for node in model.graph.node:
        if id(node) in site_nodes:
            nodes.append(onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]]))
        else:
            nodes.append(node)
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    del g.graph.value_info[:]
    kept = [o for o in g.opset_import if o.domain != SITE_DOMAIN]
    del g.opset_import[:]
    g.opset_import.extend(kept)
    prune_initializers(g)
    return g


def prune_initializers(model: onnx.ModelProto) -> None:
    """Drop initializers no node reads (a replaced Dropout's ratio, say)."""
    used = {i for n in model.graph.node for i in n.input}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def probe(model: onnx.ModelProto, input_name: str, sites: list[SiteSpec]) -> Probe:
    """Run the graph (dropout as identity) on 3 and 5 rows and record every tensor's shape."""
    g = eval_graph(model, sites)
    names = [o for n in g.graph.node for o in n.output if o]
    have = {o.name for o in g.graph.output}
    g.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    x = next(i for i in model.graph.input if i.name == input_name)
    row = [d.dim_value for d in x.type.tensor_type.shape.dim[1:]]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(g.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ImportRefused(f"the graph does not load in onnxruntime ({first_line(e)})") from e
    outs = [o.name for o in sess.get_outputs()]
    shapes: dict[str, list[tuple[int, ...]]] = {}
    rng = np.random.default_rng(0)
    for rows in PROBE_ROWS:
        feed = {input_name: rng.standard_normal((rows, *row)).astype(np.float32)}
        try:
            values = sess.run(outs, feed)
        except Exception as e:
            raise ImportRefused(
                f"shapes could not be inferred: running the graph on {rows} rows of shape "
                f"{row} failed ({first_line(e)}); is the batch axis really dynamic?"
            ) from e
        for name, v in zip(outs, values, strict=True):
            shapes.setdefault(name, []).append(tuple(np.shape(v)))
    shapes.setdefault(input_name, []).extend([(r, *row) for r in PROBE_ROWS])
    return Probe({k: (v[0], v[1]) for k, v in shapes.items()}, row)


def site_shapes(sites: list[SiteSpec], found: Probe) -> None:
    """Set each site's per-row mask shape: the whole activation, or (C, 1, ...) per channel."""
    for s in sites:
        if not found.carries_rows(s.tensor):
            shapes = found.shapes.get(s.tensor)
            raise ImportRefused(
                f"{s.source}: its tensor '{s.tensor}' does not carry rows on its first axis "
                f"(shapes {shapes} for {list(PROBE_ROWS)} rows), so no per-row mask fits it"
            )
        row = found.row_shape(s.tensor)
        if s.kind == "channel":
            if not row:
                raise ImportRefused(f"{s.source}: channel dropout needs a channel axis")
            s.shape = (row[0],) + (1,) * (len(row) - 1)
        else:
            s.shape = row


__all__ = [
    "HOW_TO_KEEP_DROPOUT",
    "ImportRefused",
    "Probe",
    "SiteSpec",
    "check_graph",
    "eval_graph",
    "find_sites",
    "pick_output",
    "probe",
    "prune_initializers",
    "read_graph",
    "site_shapes",
]

"""Rewrite a user's ONNX graph into the form the onnxruntime engine serves, and save it.

The served form is the built-in export's (onnx_export.py): inputs `x` (R rows), `rows` (M int64
indices) and one float 0/1 mask `mask_k` per dropout site, of shape (M, *site shape); output
`y` (M, D). Each site multiplies its activation by mask_k, and inverted dropout's 1/keep is
folded into the one linear layer that reads the site (or applied to the mask when there is
none), so a mask of all `keep` gives the eval-mode network back.

Nodes that depend on no mask form the deterministic prefix and run once per input row, not
T times (graph_split.py); the engine runs them as a session of their own (graph_engine.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.artifacts.manifest import GraphSite, sha256_file
from service.engines.graph_probe import Probe, probe, prune_initializers, site_shapes
from service.engines.graph_sites import (
    HOW_TO_KEEP_DROPOUT,
    SITE_DOMAIN,
    ImportRefused,
    SiteSpec,
    check_graph,
    find_sites,
    pick_output,
)
from service.engines.graph_split import downstream, replicate_rows

GRAPH_NAME = "graph.onnx"
# Initializers moved to weights.safetensors keep their name, type and dims in the graph, with
# this mark and no data; loading puts the verified values back.
WEIGHT_MARK = "mcdrop:safetensors"
_USER = "g/"  # every name of the user's graph gets this prefix: none can clash with x, rows, y


@dataclass
class Rewritten:
    """A graph in served form (initializers still inline) and what the manifest needs."""

    model: onnx.ModelProto
    sites: list[GraphSite]
    input_shape: list[int]
    output_dim: int
    bytes_per_row: int


def _rn(name: str) -> str:
    return _USER + name if name else name


def _renamed(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for node in g.node:
        node.input[:] = [_rn(i) for i in node.input]
        node.output[:] = [_rn(o) for o in node.output]
    for t in g.initializer:
        t.name = _rn(t.name)
    for v in [*g.input, *g.output]:
        v.name = _rn(v.name)
    del g.value_info[:]
    return m


def rewrite(
    model: onnx.ModelProto,
    output: str | None = None,
    extra_sites: dict[str, float] | None = None,
    outputs: str = "logits",
) -> Rewritten:
    """The served form of `model`; ImportRefused (naming the part) when it cannot be faithful."""
    input_name = check_graph(model)
    out_name = pick_output(model, output)
    found_sites = find_sites(model, extra_sites or {})
    active = [s for s in found_sites if s.keep_prob < 1.0]
    if not active:
        raise ImportRefused(
            "the graph has no active dropout (no Dropout node with a rate above 0, no --site), "
            f"so MC dropout would report no uncertainty; {HOW_TO_KEEP_DROPOUT}"
        )
    found = probe(model, input_name, found_sites)
    site_shapes(active, found)
    if not found.carries_rows(out_name):
        raise ImportRefused(
            f"output '{out_name}': its first axis does not follow the rows "
            f"(shapes {found.shapes.get(out_name)} for 3 and 5 rows)"
        )
    out_row = found.row_shape(out_name)
    m = _renamed(model)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 1)
    nodes, inits, site_list = _with_masks(m, model, found_sites, input_name, opset)
    shapes = {_rn(k): v for k, v in found.shapes.items()}
    shapes["x"] = found.shapes[input_name]
    nodes = replicate_rows(nodes, Probe(shapes, found.input_shape), len(site_list))
    y_src = m.graph.output[[o.name for o in model.graph.output].index(out_name)].name
    stochastic = downstream(nodes, {f"mask_{k}" for k in range(len(site_list))})
    if y_src not in stochastic:
        raise ImportRefused(
            f"no dropout site lies on the path from the input to output '{out_name}'; "
            f"{HOW_TO_KEEP_DROPOUT}"
        )
    if outputs == "probabilities":  # served as log p, which the softmax of a summary undoes
        eps = _const(inits, "mcdrop/eps", 1e-30)
        nodes.append(_mul_like("Add", [y_src, eps], "mcdrop/p_eps", opset))
        nodes.append(helper.make_node("Log", ["mcdrop/p_eps"], ["mcdrop/log_p"]))
        y_src = "mcdrop/log_p"
    nodes.append(helper.make_node("Flatten", [y_src], ["y"], axis=1))
    d = math.prod(out_row) if out_row else 1
    graph = helper.make_graph(
        nodes,
        "mcdrop_graph",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["R", *found.input_shape]),
            helper.make_tensor_value_info("rows", TensorProto.INT64, ["M"]),
            *[
                helper.make_tensor_value_info(f"mask_{k}", TensorProto.FLOAT, ["M", *s.shape])
                for k, s in enumerate(site_list)
            ],
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", d])],
        [*m.graph.initializer, *inits],
    )
    out = helper.make_model(
        graph,
        opset_imports=[o for o in m.opset_import if o.domain != SITE_DOMAIN],
        producer_name="mcdrop",
    )
    out.ir_version = m.ir_version
    prune_initializers(out)
    try:
        onnx.checker.check_model(out)
    except onnx.checker.ValidationError as e:
        raise ImportRefused(f"the rewritten graph is not valid ONNX ({e})") from e
    widest = max(
        (math.prod(found.row_shape(n)) for n in found.shapes if found.carries_rows(n)), default=1
    )
    sites = [
        GraphSite(
            input=f"mask_{k}",
            keep_prob=s.keep_prob,
            kind="channel" if s.kind == "channel" else "element",
            shape=list(s.shape),
            source=s.source,
        )
        for k, s in enumerate(site_list)
    ]
    return Rewritten(out, sites, found.input_shape, d, 2 * 4 * max(widest, 1))


def _const(inits: list[TensorProto], name: str, value: float) -> str:
    inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name


def _mul_like(op: str, inputs: list[str], out: str, opset: int) -> onnx.NodeProto:
    # Before opset 7, broadcasting a scalar needed the `broadcast` attribute.
    if opset < 7:
        return helper.make_node(op, inputs, [out], broadcast=1)
    return helper.make_node(op, inputs, [out])


def _with_masks(
    m: onnx.ModelProto,
    original: onnx.ModelProto,
    sites: list[SiteSpec],
    input_name: str,
    opset: int,
) -> tuple[list[onnx.NodeProto], list[TensorProto], list[SiteSpec]]:
    """The renamed graph's nodes with each site turned into Mul(activation, mask_k / keep)."""
    by_node = {id(s.node): s for s in sites if s.node is not None}
    after: dict[str, list[SiteSpec]] = {}
    for s in sites:
        if s.node is None:
            after.setdefault(_rn(s.tensor), []).append(s)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = [helper.make_node("Identity", ["x"], [_rn(input_name)])]
    served: list[SiteSpec] = []
    redirect: dict[str, str] = {}

    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in m.graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    outputs = {o.name for o in m.graph.output}
    weights = {t.name: t for t in m.graph.initializer}

    def masked(tensor: str, out: str, s: SiteSpec) -> None:
        k = len(served)
        if _fold_scale(readers.get(out, []), out, 1.0 / s.keep_prob, weights, readers, outputs):
            nodes.append(helper.make_node("Mul", [tensor, f"mask_{k}"], [out]))
        else:
            inv = _const(inits, f"mcdrop/inv_keep_{k}", 1.0 / s.keep_prob)
            nodes.append(_mul_like("Mul", [f"mask_{k}", inv], f"mcdrop/mask_{k}_scaled", opset))
            nodes.append(helper.make_node("Mul", [tensor, f"mcdrop/mask_{k}_scaled"], [out]))
        served.append(SiteSpec(tensor, out, s.keep_prob, s.kind, s.source, s.node, s.shape))

    def extra_after(tensor: str) -> None:
        for s in after.get(tensor, []):
            k = len(served)
            masked(redirect.get(tensor, tensor), f"{tensor}/site_{k}", s)
            redirect[tensor] = f"{tensor}/site_{k}"

    extra_after(_rn(input_name))
    for node, orig in zip(m.graph.node, original.graph.node, strict=True):
        node.input[:] = [redirect.get(i, i) for i in node.input]
        site = by_node.get(id(orig))
        if site is None:
            nodes.append(node)
        elif site.keep_prob >= 1.0:  # rate 0: never drops anything
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]]))
        else:
            masked(node.input[0], node.output[0], site)
        for o in node.output:
            extra_after(o)
    for o in m.graph.output:
        o.name = redirect.get(o.name, o.name)
    return nodes, inits, served


def _fold_scale(
    consumers: list[onnx.NodeProto],
    tensor: str,
    scale: float,
    weights: dict[str, TensorProto],
    readers: dict[str, list[onnx.NodeProto]],
    outputs: set[str],
) -> bool:
    """Fold inverted dropout's 1/keep into the one linear layer reading the site, as the
    built-in engines do, so a pass spends no multiply on scaling masks. True when folded."""
    if len(consumers) != 1 or tensor in outputs:
        return False
    node = consumers[0]
    if list(node.input).count(tensor) != 1 or node.input[0] != tensor:
        return False
    if node.op_type == "Gemm":  # alpha * A @ B + beta * C: scale alpha
        alpha = next((a for a in node.attribute if a.name == "alpha"), None)
        if alpha is None:
            node.attribute.append(helper.make_attribute("alpha", scale))
        else:
            alpha.f *= scale
        return True
    if node.op_type not in ("MatMul", "Conv") or len(node.input) < 2:
        return False
    w = weights.get(node.input[1])
    if w is None or w.data_type != TensorProto.FLOAT or len(readers.get(w.name, [])) != 1:
        return False
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(scale), w.name))
    return True


def strip_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Move float32 initializers out of the graph (kept as marked, empty declarations)."""
    moved: dict[str, np.ndarray] = {}
    for t in model.graph.initializer:
        if t.data_type != TensorProto.FLOAT or math.prod(t.dims) < 16:
            continue
        moved[t.name] = numpy_helper.to_array(t)
        dims, name = list(t.dims), t.name
        t.Clear()
        t.name, t.data_type, t.doc_string = name, TensorProto.FLOAT, WEIGHT_MARK
        t.dims.extend(dims)
    return moved


def save_graph(model: onnx.ModelProto, folder: Path) -> str:
    """Write graph.onnx (weights stripped beforehand) and return its SHA-256."""
    path = Path(folder) / GRAPH_NAME
    path.write_bytes(model.SerializeToString())
    return sha256_file(path)


__all__ = ["GRAPH_NAME", "WEIGHT_MARK", "Rewritten", "rewrite", "save_graph", "strip_weights"]

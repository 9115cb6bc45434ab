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
from service.engines.graph_masks import (
    mul_like,
    scalar_const,
    user_name,
    with_masks,
    with_user_names,
)
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


@dataclass
class Rewritten:
    """A graph in served form (initializers still inline) and what the manifest needs."""

    model: onnx.ModelProto
    sites: list[GraphSite]
    input_shape: list[int]
    output_dim: int
    bytes_per_row: int


def rewrite(
    model: onnx.ModelProto,
    output: str | None = None,
    extra_sites: dict[str, float] | None = None,
    outputs: str = "logits",
) -> Rewritten:
    """The served form of `model`; ImportRefused (naming the part) when it cannot be faithful."""
    input_name = check_graph(model)
    out_name = pick_output(model, output)
    found_sites, found = _probe_sites(model, input_name, out_name, extra_sites or {})
    m = with_user_names(model)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 1)
    nodes, inits, site_list = with_masks(m, model, found_sites, input_name, opset)
    shapes = {user_name(k): v for k, v in found.shapes.items()}
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
        y_src = _log_of(y_src, nodes, inits, opset)
    nodes.append(helper.make_node("Flatten", [y_src], ["y"], axis=1))
    out_row = found.row_shape(out_name)
    d = math.prod(out_row) if out_row else 1
    out = _served_model(m, nodes, inits, site_list, found.input_shape, d)
    widest = max(
        (math.prod(found.row_shape(n)) for n in found.shapes if found.carries_rows(n)), default=1
    )
    return Rewritten(out, _graph_sites(site_list), found.input_shape, d, 2 * 4 * max(widest, 1))


def _probe_sites(
    model: onnx.ModelProto, input_name: str, out_name: str, extra_sites: dict[str, float]
) -> tuple[list[SiteSpec], Probe]:
    """The graph's dropout sites and the shapes of its tensors, refusing a graph without an
    active site or whose output does not follow the rows."""
    found_sites = find_sites(model, extra_sites)
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
    return found_sites, found


def _log_of(y_src: str, nodes: list[onnx.NodeProto], inits: list[TensorProto], opset: int) -> str:
    """Append log(y + 1e-30) to the nodes; the name of the result."""
    eps = scalar_const(inits, "mcdrop/eps", 1e-30)
    nodes.append(mul_like("Add", [y_src, eps], "mcdrop/p_eps", opset))
    nodes.append(helper.make_node("Log", ["mcdrop/p_eps"], ["mcdrop/log_p"]))
    return "mcdrop/log_p"


def _served_model(
    m: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    inits: list[TensorProto],
    site_list: list[SiteSpec],
    input_shape: list[int],
    d: int,
) -> onnx.ModelProto:
    """The served graph: inputs x, rows and mask_k, output y (M, d); checked by onnx."""
    graph = helper.make_graph(
        nodes,
        "mcdrop_graph",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["R", *input_shape]),
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
    return out


def _graph_sites(site_list: list[SiteSpec]) -> list[GraphSite]:
    return [
        GraphSite(
            input=f"mask_{k}",
            keep_prob=s.keep_prob,
            kind="channel" if s.kind == "channel" else "element",
            shape=list(s.shape),
            source=s.source,
        )
        for k, s in enumerate(site_list)
    ]


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

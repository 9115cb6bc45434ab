"""Dropout sites of an imported graph turned into mask inputs (see graph_import.py).

The user's tensors are renamed under a prefix first, so none can clash with the served graph's
own names (x, rows, mask_k, y).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.engines.graph_sites import SiteSpec

_USER = "g/"  # every name of the user's graph gets this prefix: none can clash with x, rows, y


def user_name(name: str) -> str:
    """The name a tensor of the user's graph has in the served graph ("" stays "")."""
    return _USER + name if name else name


def with_user_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph with every tensor renamed by `user_name` (shape hints dropped)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for node in g.node:
        node.input[:] = [user_name(i) for i in node.input]
        node.output[:] = [user_name(o) for o in node.output]
    for t in g.initializer:
        t.name = user_name(t.name)
    for v in [*g.input, *g.output]:
        v.name = user_name(v.name)
    del g.value_info[:]
    return m


def scalar_const(inits: list[TensorProto], name: str, value: float) -> str:
    inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
    return name


def mul_like(op: str, inputs: list[str], out: str, opset: int) -> onnx.NodeProto:
    # Before opset 7, broadcasting a scalar needed the `broadcast` attribute.
    if opset < 7:
        return helper.make_node(op, inputs, [out], broadcast=1)
    return helper.make_node(op, inputs, [out])


def with_masks(
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
            after.setdefault(user_name(s.tensor), []).append(s)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = [helper.make_node("Identity", ["x"], [user_name(input_name)])]
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
        if fold_scale(readers.get(out, []), out, 1.0 / s.keep_prob, weights, readers, outputs):
            nodes.append(helper.make_node("Mul", [tensor, f"mask_{k}"], [out]))
        else:
            inv = scalar_const(inits, f"mcdrop/inv_keep_{k}", 1.0 / s.keep_prob)
            nodes.append(mul_like("Mul", [f"mask_{k}", inv], f"mcdrop/mask_{k}_scaled", opset))
            nodes.append(helper.make_node("Mul", [tensor, f"mcdrop/mask_{k}_scaled"], [out]))
        served.append(SiteSpec(tensor, out, s.keep_prob, s.kind, s.source, s.node, s.shape))

    def extra_after(tensor: str) -> None:
        for s in after.get(tensor, []):
            k = len(served)
            masked(redirect.get(tensor, tensor), f"{tensor}/site_{k}", s)
            redirect[tensor] = f"{tensor}/site_{k}"

    extra_after(user_name(input_name))
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


def fold_scale(
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

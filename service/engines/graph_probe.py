"""Shapes of a graph's tensors, found by running it rather than trusting its annotations.

The graph runs in onnxruntime with every dropout as identity, on 3 and on 5 rows: a tensor
whose first axis follows the row count carries rows; anything else (shape arithmetic,
constants) does not. That tells the split where to replicate rows over samples, and gives
every site's per-row mask shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from service.engines.graph_sites import SITE_DOMAIN, ImportRefused, SiteSpec
from service.engines.onnx_engine import first_line

PROBE_ROWS = (3, 5)


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


__all__ = ["PROBE_ROWS", "Probe", "eval_graph", "probe", "prune_initializers", "site_shapes"]

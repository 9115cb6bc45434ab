"""Where the rows are replicated over samples: the split of a masked graph.

Nodes that no mask reaches form the deterministic prefix and keep their inputs. A stochastic
node reading a prefix tensor that carries rows reads `Gather(t, rows)` instead; a prefix tensor
derived from the rows without carrying them (a Shape, say) is recomputed by a clone of its
producers that reads the replicated tensors, so it sees M rows, not R.
"""

from __future__ import annotations

import onnx
from onnx import helper

from service.engines.graph_probe import Probe
from service.engines.graph_sites import ImportRefused


def downstream(nodes: list[onnx.NodeProto], sources: set[str]) -> set[str]:
    reached = set(sources)
    for node in nodes:
        if any(i in reached for i in node.input if i):
            reached.update(o for o in node.output if o)
    return reached


def replicate_rows(nodes: list[onnx.NodeProto], shapes: Probe, sites: int) -> list[onnx.NodeProto]:
    """Prefix nodes as they are; stochastic nodes read replicated (Gather by rows) tensors."""
    masks = {f"mask_{k}" for k in range(sites)}
    stochastic = downstream(nodes, masks)
    from_x = downstream(nodes, {"x"})
    producer = {o: n for n in nodes for o in n.output if o}
    prefix = [n for n in nodes if not any(o in stochastic for o in n.output if o)]
    tail: list[onnx.NodeProto] = []
    memo: dict[str, str] = {}

    def rep(t: str) -> str:
        if not t or t in stochastic or t not in from_x:
            return t
        if t in memo:
            return memo[t]
        if shapes.carries_rows(t):
            memo[t] = f"{t}@rows"
            tail.append(helper.make_node("Gather", [t, "rows"], [memo[t]], axis=0))
            return memo[t]
        node = producer.get(t)
        if node is None:
            raise ImportRefused(f"tensor '{t}' depends on the rows oddly")
        clone = onnx.NodeProto()
        clone.CopyFrom(node)
        clone.name = f"{node.name}@rows" if node.name else ""
        clone.input[:] = [rep(i) for i in node.input]
        clone.output[:] = [f"{o}@rows" if o else o for o in node.output]
        for o in node.output:
            if o:
                memo[o] = f"{o}@rows"
        tail.append(clone)
        return memo[t]

    for node in nodes:
        if any(o in stochastic for o in node.output if o):
            node.input[:] = [rep(i) for i in node.input]
            tail.append(node)
    return prefix + tail


__all__ = ["downstream", "replicate_rows"]

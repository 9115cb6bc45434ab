"""Loading an imported or packaged graph folder into the onnxruntime engine.

Checks before anything runs: the graph is a plain .onnx file inside the folder, at most 2 GiB,
with the manifest's SHA-256; it keeps no tensor in an external file; its weights come from
weights.safetensors (checksum, names and shapes verified by `load_weights`). The graph is
parsed as protobuf and handed to onnxruntime as bytes: no pickle anywhere.

Devices: the CPU provider always; onnxruntime's CUDA provider when the device asks for it and
the installed onnxruntime has it (the masks are still drawn on the CPU and copied in).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service.artifacts.manifest import GraphArchitecture, Manifest, load_weights, sha256_file
from service.engines.graph_import import WEIGHT_MARK
from service.engines.graph_sites import MAX_GRAPH_BYTES
from service.engines.onnx_engine import OnnxEngine, OnnxSite, first_line, session_options
from service.engines.runtime import EngineRuntime
from service.errors import ArtifactError, EngineUnavailable

CUDA_PROVIDER = "CUDAExecutionProvider"


def providers_for(device: str) -> list[str]:
    """onnxruntime providers for a device setting; EngineUnavailable when it cannot be had."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" and CUDA_PROVIDER not in available:
        raise EngineUnavailable(
            "device 'cuda' was requested, but this onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu) and graph models run only on onnxruntime"
        )
    if device in ("auto", "cuda") and CUDA_PROVIDER in available:
        return [CUDA_PROVIDER, "CPUExecutionProvider"]
    if device == "auto":
        return ["CPUExecutionProvider"]
    raise EngineUnavailable(f"device '{device}': graph models run on 'cpu' or 'cuda'")


def read_served_graph(folder: Path, manifest: Manifest) -> onnx.ModelProto:
    """The folder's graph with its verified weights put back in."""
    arch = manifest.architecture
    assert isinstance(arch, GraphArchitecture)
    folder = Path(folder)
    path = folder / arch.graph
    if path.suffix != ".onnx" or path.resolve().parent != folder.resolve():
        raise ArtifactError(f"{path}: the graph must be an .onnx file inside the model folder")
    if not path.is_file():
        raise ArtifactError(f"{path}: graph file not found")
    if path.stat().st_size > MAX_GRAPH_BYTES:
        raise ArtifactError(f"{path}: over 2 GiB, more than one ONNX message can hold")
    digest = sha256_file(path)
    if digest != arch.graph_sha256:
        raise ArtifactError(
            f"{path}: SHA-256 mismatch (manifest {arch.graph_sha256[:12]}…, file "
            f"{digest[:12]}…): the graph was changed or corrupted"
        )
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception as e:
        raise ArtifactError(f"{path}: not a readable ONNX graph ({first_line(e)})") from e
    declared = {}
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise ArtifactError(f"{path}: tensor '{t.name}' points to an external file")
        if t.doc_string == WEIGHT_MARK:
            declared[t.name] = tuple(int(d) for d in t.dims)
    tensors = load_weights(folder, manifest, declared)
    for t in model.graph.initializer:
        if t.doc_string == WEIGHT_MARK:
            t.CopyFrom(numpy_helper.from_array(tensors[t.name], t.name))
    return model


def load_graph_engine(folder: Path, manifest: Manifest, runtime: EngineRuntime) -> OnnxEngine:
    """The folder's graph on onnxruntime, on the runtime's device, budget and threads."""
    arch = manifest.architecture
    assert isinstance(arch, GraphArchitecture)
    providers = providers_for(runtime.device)
    threads = runtime.session_threads
    model = read_served_graph(folder, manifest)
    elementwise = {k for k, s in enumerate(arch.sites) if s.kind == "element"}
    applied = masked_on_entry(list(model.graph.node), elementwise)
    head, tail = split_prefix(model, applied)
    if head is None:
        applied = {}
    try:
        opts = session_options(threads)
        prefix = None
        if head is not None:
            prefix = ort.InferenceSession(head.SerializeToString(), opts, providers=providers)
            tail = typed_inputs(tail, prefix, arch.input_shape)
        session = ort.InferenceSession(tail.SerializeToString(), opts, providers=providers)
    except Exception as e:  # unknown operator, a provider that fails to start
        raise ArtifactError(f"{folder}: the graph does not load ({first_line(e)})") from e
    sites = [
        OnnxSite(k, s.keep_prob, "bernoulli", tuple(s.shape)) for k, s in enumerate(arch.sites)
    ]
    for k, s in enumerate(arch.sites):
        if s.input != f"mask_{k}":
            raise ArtifactError(f"{folder}: site {k} must feed input 'mask_{k}', not '{s.input}'")
    bytes_per_row = max(arch.bytes_per_row, 4 * max(math.prod(s.shape) for s in arch.sites))
    return OnnxEngine.from_session(
        session, sites, bytes_per_row, runtime.max_activation_mb, threads, prefix, applied
    )


def _closure(
    nodes: list[onnx.NodeProto], wanted: list[str], stop: set[str]
) -> list[onnx.NodeProto]:
    """The nodes computing `wanted` from `stop` (and constants), in graph order."""
    producer = {o: n for n in nodes for o in n.output if o}
    keep: set[int] = set()
    todo = [t for t in wanted if t not in stop]
    while todo:
        node = producer.get(todo.pop())
        if node is None or id(node) in keep:
            continue
        keep.add(id(node))
        todo.extend(i for i in node.input if i and i not in stop)
    return [n for n in nodes if id(n) in keep]


def _model(
    src: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
) -> onnx.ModelProto:
    used = {i for n in nodes for i in n.input}
    inits = [t for t in src.graph.initializer if t.name in used]
    graph = onnx.helper.make_graph(nodes, src.graph.name, inputs, outputs, inits)
    out = onnx.helper.make_model(graph, opset_imports=list(src.opset_import))
    out.ir_version = src.ir_version
    return out


Applied = dict[int, tuple[str, str]]  # site -> (prefix tensor, the masked tensor it becomes)


def masked_on_entry(nodes: list[onnx.NodeProto], element_sites: set[int]) -> Applied:
    """Element-wise sites that mask a replicated prefix tensor at once, `Mul(Gather(t, rows),
    mask_k)`: the engine replicates t and applies their masks in place itself, as the torch
    engine does, so no float mask array is written for them."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    found: Applied = {}
    for n in nodes:
        if n.op_type != "Gather" or list(n.input[1:]) != ["rows"] or n.input[0] == "x":
            continue
        users = readers.get(n.output[0], [])
        if len(users) != 1 or users[0].op_type != "Mul":
            continue
        other = [i for i in users[0].input if i != n.output[0]]
        if len(other) == 1 and other[0].startswith("mask_") and len(readers[other[0]]) == 1:
            k = int(other[0].removeprefix("mask_"))
            if k in element_sites:
                found[k] = (n.input[0], users[0].output[0])
    return found


def split_prefix(
    model: onnx.ModelProto, applied: Applied | None = None
) -> tuple[onnx.ModelProto | None, onnx.ModelProto]:
    """Cut the graph at its row replication: (prefix x -> replicated tensors, the rest).

    The tensors a `Gather(t, rows)` replicates are the prefix's outputs and the rest's inputs;
    None when nothing but x itself is replicated (no layer before the first site). For the
    `applied` sites the rest takes the masked tensor as an input instead.
    """
    g = model.graph
    nodes = list(g.node)
    entered = [out for _, out in (applied or {}).values()]
    boundary = [
        n.input[0] for n in nodes if n.op_type == "Gather" and list(n.input[1:]) == ["rows"]
    ]
    computed = [t for t in dict.fromkeys(boundary) if t != "x"]
    if not computed:
        return None, model
    by_name = {i.name: i for i in g.input}
    head_nodes = _closure(nodes, computed, {"x"})
    outs = [onnx.ValueInfoProto(name=t) for t in computed]
    head = _model(model, head_nodes, [by_name["x"]], outs)
    stop = {"rows", "x", *computed, *entered, *(i.name for i in g.input)}
    tail_nodes = _closure(nodes, [o.name for o in g.output], stop)
    read = {i for n in tail_nodes for i in n.input}
    fed = [onnx.ValueInfoProto(name=t) for t in [*computed, *entered] if t in read]
    inputs = [*fed, *(i for i in g.input if i.name in read)]
    return head, _model(model, tail_nodes, inputs, list(g.output))


def typed_inputs(
    tail: onnx.ModelProto, prefix: ort.InferenceSession, input_shape: list[int]
) -> onnx.ModelProto:
    """Give the rest's inputs from the prefix their element types, read from one prefix run."""
    names = [o.name for o in prefix.get_outputs()]
    probe = np.zeros((1, *input_shape), np.float32)
    values = dict(zip(names, prefix.run(names, {"x": probe}), strict=True))
    for i in tail.graph.input:
        if not i.type.HasField("tensor_type"):  # fed from the prefix, or masked from it
            elem = onnx.TensorProto.FLOAT
            if i.name in values:
                elem = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(values[i.name]).dtype)
            i.CopyFrom(onnx.helper.make_tensor_value_info(i.name, elem, None))
    return tail


__all__ = ["load_graph_engine", "providers_for", "read_served_graph"]

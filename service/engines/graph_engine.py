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

import onnx
import onnxruntime as ort
from onnx import numpy_helper

from service.artifact import GraphArchitecture, Manifest, load_weights, sha256_file
from service.engines.graph_import import WEIGHT_MARK
from service.engines.graph_sites import MAX_GRAPH_BYTES
from service.engines.onnx_engine import OnnxEngine, OnnxSite, first_line, session_options
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


def load_graph_engine(
    folder: Path,
    manifest: Manifest,
    device: str = "auto",
    max_activation_mb: float = 256.0,
    threads: int | None = None,
) -> OnnxEngine:
    arch = manifest.architecture
    assert isinstance(arch, GraphArchitecture)
    providers = providers_for(device)
    model = read_served_graph(folder, manifest)
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), session_options(threads), providers=providers
        )
    except Exception as e:  # unknown operator, a provider that fails to start
        raise ArtifactError(f"{folder}: the graph does not load ({first_line(e)})") from e
    sites = [
        OnnxSite(k, s.keep_prob, "bernoulli", tuple(s.shape)) for k, s in enumerate(arch.sites)
    ]
    for k, s in enumerate(arch.sites):
        if s.input != f"mask_{k}":
            raise ArtifactError(f"{folder}: site {k} must feed input 'mask_{k}', not '{s.input}'")
    bytes_per_row = max(arch.bytes_per_row, 4 * max(math.prod(s.shape) for s in arch.sites))
    return OnnxEngine.from_session(session, sites, bytes_per_row, max_activation_mb, threads)


__all__ = ["load_graph_engine", "providers_for", "read_served_graph"]

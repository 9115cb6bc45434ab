"""The one entry point the serving layer uses to make engines: it never imports an engine module.

Engine modules are imported on first use, so a server on onnxruntime never loads torch and one
on torch never loads onnxruntime (unless a graph folder needs it).
"""

from __future__ import annotations

from pathlib import Path

from service.artifacts.manifest import GraphArchitecture, Manifest
from service.engines.base import Engine
from service.engines.runtime import EngineRuntime


def start_runtime(runtime: EngineRuntime) -> None:
    """Apply the runtime's process-wide settings (torch's thread pools), once at start-up,
    before any engine is built under it. With engine processes each child applies them."""
    if runtime.engine == "torch" and not runtime.process:
        from service.engines.torch_runtime import apply_thread_settings

        apply_thread_settings(runtime)


def build_engine(folder: Path, manifest: Manifest, runtime: EngineRuntime) -> Engine:
    """The engine for a model folder: a graph folder runs on onnxruntime (on the runtime's
    device); a built-in architecture on the runtime's engine, torch or onnx (model.onnx).
    With `runtime.process` that engine runs in child processes instead (process_engine.py)."""
    if runtime.process:
        from service.engines.process_engine import ProcessEngine

        return ProcessEngine(folder, runtime)
    if isinstance(manifest.architecture, GraphArchitecture):
        from service.engines.graph_engine import load_graph_engine

        return load_graph_engine(folder, manifest, runtime)
    if runtime.engine == "onnx":
        from service.engines.onnx_engine import load_onnx_engine

        return load_onnx_engine(folder, manifest, runtime)
    from service.engines.torch_engine import load_torch_engine

    return load_torch_engine(folder, manifest, runtime)

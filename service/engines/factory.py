"""The one entry point the serving layer uses to make engines: it never imports an engine module.

Engine modules are imported on first use, so a server on onnxruntime never loads torch and one
on torch never loads onnxruntime (unless a graph folder needs it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from service.artifacts.manifest import GraphArchitecture, Manifest
from service.engines.base import Engine, SampleJob
from service.engines.runtime import EngineRuntime

log = logging.getLogger("mcdrop.engines")

# With MCDROP_ENGINE_PROCESS=auto, a model whose lone one-row pass (at its default T) takes at
# least this much CPU runs in the engine process. The round trip costs a lone request about
# 0.2-0.3 ms, and under load the GIL costs a pass about a tenth of its time, so the process pays
# for passes of a few milliseconds; lighter models stay in the server process.
AUTO_PROCESS_PASS_S = 0.001


def start_runtime(runtime: EngineRuntime) -> None:
    """Apply the runtime's process-wide settings (torch's thread pools), once at start-up,
    before any engine is built under it. With engine processes each child applies them."""
    if runtime.engine == "torch" and runtime.process is not True:
        from service.engines.torch_runtime import apply_thread_settings

        apply_thread_settings(runtime)


def build_engine(folder: Path, manifest: Manifest, runtime: EngineRuntime) -> Engine:
    """The engine for a model folder: a graph folder runs on onnxruntime (on the runtime's
    device); a built-in architecture on the runtime's engine, torch or onnx (model.onnx).
    With `runtime.process` it runs in child processes instead (process_engine.py); with "auto",
    only when a lone pass takes AUTO_PROCESS_PASS_S or more (measured here, at load)."""
    if runtime.process is True:
        from service.engines.process_engine import ProcessEngine

        return ProcessEngine(folder, runtime)
    engine = _in_process(folder, manifest, runtime)
    if runtime.process != "auto":
        return engine
    cpu_s = runtime.calls.run(lone_pass_seconds, engine, manifest)
    where = "the server process" if cpu_s < AUTO_PROCESS_PASS_S else "an engine process"
    log.info(
        "model folder %s: a lone pass takes %.2f ms of CPU; serving it in %s",
        folder.name,
        1e3 * cpu_s,
        where,
    )
    if cpu_s < AUTO_PROCESS_PASS_S:
        return engine
    from service.engines.process_engine import ProcessEngine

    return ProcessEngine(folder, runtime)


def lone_pass_seconds(engine: Engine, manifest: Manifest) -> float:
    """CPU time of the calling thread in the fastest one-row pass at the model's default T, of
    as many as run in 50 ms of CPU (at least three; at most 0.5 s). CPU time, not wall time, and
    the fastest pass, so that a busy host (another process on the cores, a reload under load) or
    a new process's slow first passes (torch's lazy set-up, cold caches) do not move a light
    model into the engine process."""
    x = np.zeros((1, *manifest.input_shape), np.float32)
    job = SampleJob(x, manifest.default_samples, 0)
    times: list[float] = []
    while (len(times) < 3 or sum(times) < 0.05) and sum(times) < 0.5:
        start = time.thread_time()
        engine.sample_many([job])
        times.append(time.thread_time() - start)
    return min(times)


def _in_process(folder: Path, manifest: Manifest, runtime: EngineRuntime) -> Engine:
    if isinstance(manifest.architecture, GraphArchitecture):
        from service.engines.graph_engine import load_graph_engine

        return load_graph_engine(folder, manifest, runtime)
    if runtime.engine == "onnx":
        from service.engines.onnx_engine import load_onnx_engine

        return load_onnx_engine(folder, manifest, runtime)
    from service.engines.torch_engine import load_torch_engine

    return load_torch_engine(folder, manifest, runtime)

"""Engines run the T stochastic forward passes. Only modules in this package import torch or
onnxruntime; everything above them sees numpy arrays in and (T, N, D) samples out.

Above this package, engines are made only through `build_engine`, under an `EngineRuntime`
built once from the settings (`start_runtime` applies its process-wide part)."""

from service.engines.base import Engine, SampleJob
from service.engines.factory import build_engine, start_runtime
from service.engines.runtime import EngineName, EngineProcess, EngineRuntime, Precision

__all__ = [
    "Engine",
    "EngineName",
    "EngineProcess",
    "EngineRuntime",
    "Precision",
    "SampleJob",
    "build_engine",
    "start_runtime",
]

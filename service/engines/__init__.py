"""Engines run the T stochastic forward passes. Only modules in this package import torch or
onnxruntime; everything above them sees numpy arrays in and (T, N, D) samples out."""

from service.engines.base import Engine, SampleJob

__all__ = ["Engine", "SampleJob"]

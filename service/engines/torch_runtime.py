"""What an `EngineRuntime` means to torch: the device, the thread settings and the precision."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

from service.engines.runtime import EngineRuntime, threads_per_worker

_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, before anyone sets it


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    return device


def apply_thread_settings(runtime: EngineRuntime) -> None:
    """Apply the runtime's thread settings to torch, once at start-up, before any engine is built.

    torch's intra-op pool gets `threads_per_worker` threads (torch's default for one worker
    without a setting); the mask filler of each engine built afterwards uses the same count. One
    inter-op thread: a second pool would only compete for the cores.
    """
    threads = threads_per_worker(runtime.threads, runtime.workers, os.cpu_count() or 1)
    torch.set_num_threads(threads or _TORCH_DEFAULT_THREADS)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)


def matmul_dtype(precision: str, device: str) -> torch.dtype:
    """float32 everywhere; on CUDA also "tf32" (float32 storage, TF32 tensor-core products) or
    "bf16" (weights and activations in bfloat16). The CPU has no fast bf16 path, so it is refused.
    """
    if precision == "float32":
        return torch.float32
    if precision not in ("tf32", "bf16"):
        raise ValueError(f"precision: expected float32, tf32 or bf16, got '{precision}'")
    if not device.startswith("cuda"):
        raise ValueError(f"precision '{precision}' needs a CUDA device; the CPU runs float32")
    return torch.float32 if precision == "tf32" else torch.bfloat16


# torch's TF32 switches are process-wide: one pass at a time may set them.
_tf32_lock = threading.Lock()


def _conv_precision() -> str:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch 2.9 and later
        return str(conv.fp32_precision)
    return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"


def _set_conv_precision(value: str) -> None:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        conv.fp32_precision = value
    else:
        torch.backends.cudnn.allow_tf32 = value == "tf32"


@contextlib.contextmanager
def matmul_tf32(enabled: bool) -> Iterator[None]:
    """TF32 (or not) for this pass only, matrix products and cuDNN convolutions alike: torch's
    switches are process-wide (and cuDNN's defaults to TF32), so they are set around the pass
    and put back, under a lock (another engine's pass may want the other value).

    Through set_float32_matmul_precision, not the legacy allow_tf32 flag: torch 2.9+ refuses to
    mix that flag with its newer per-backend settings.
    """
    with _tf32_lock:
        matmul, conv = torch.get_float32_matmul_precision(), _conv_precision()
        torch.set_float32_matmul_precision("high" if enabled else "highest")
        _set_conv_precision("tf32" if enabled else "ieee")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(matmul)
            _set_conv_precision(conv)

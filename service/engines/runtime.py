"""How the engines run, settled once: which engine, device, threads, workers and precision.

An `EngineRuntime` is built once from the settings (`from_settings`) or by a library caller, and
handed to every engine built under it (`service.engines.build_engine`). It also owns the threads
that run the CPU torch work (`CallThreads`), so nothing about the engines lives in module state.
No torch import here: a runtime is plain data, and the onnxruntime path never loads torch.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, get_args

EngineName = Literal["torch", "onnx"]
EngineProcess = bool | Literal["auto"]
Precision = Literal["float32", "tf32", "bf16"]
_R = TypeVar("_R")
TORCH_THREAD_PREFIX = "mcdrop-torch"


class CallThreads:
    """The threads that do all CPU torch work of the engines of one runtime.

    libgomp (torch's OpenMP) keeps a team of worker threads for every thread that has run a
    parallel region, and once the process holds more OpenMP threads than cores it stops spinning
    between regions, so every region starts with a wake-up (docs/performance.md). With every
    load and pass on these threads the process holds one team per engine worker, whichever
    thread (event loop, batcher, test) asks. The pool starts on its first call.
    """

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def run(self, fn: Callable[..., _R], *args: object) -> _R:
        """fn(*args) on one of these threads (at once when the caller is one of them)."""
        if threading.current_thread().name.startswith(TORCH_THREAD_PREFIX):
            return fn(*args)
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.workers, thread_name_prefix=TORCH_THREAD_PREFIX
                )
            executor = self._executor
        return executor.submit(fn, *args).result()


@functools.cache
def library_threads() -> CallThreads:
    """The one thread shared by every single-worker runtime, so that library callers loading
    several models (each with its own runtime) still hold one OpenMP team between them."""
    return CallThreads(1)


class RuntimeSettings(Protocol):
    """The settings a runtime is built from (service.config.Settings has them)."""

    @property
    def engine(self) -> EngineName: ...
    @property
    def device(self) -> str: ...
    @property
    def num_threads(self) -> int: ...
    @property
    def engine_workers(self) -> int: ...
    @property
    def precision(self) -> Precision: ...
    @property
    def max_activation_mb(self) -> float: ...
    @property
    def engine_process(self) -> EngineProcess: ...


@dataclass(frozen=True)
class EngineRuntime:
    """Where and how the engines run; see docs/configuration.md for each setting."""

    engine: EngineName = "torch"  # for folders with a built-in architecture; graphs pick theirs
    device: str = "auto"  # auto, cpu or cuda
    threads: int = 0  # intra-op threads per worker; 0: see threads_per_worker
    workers: int = 1  # MC passes the torch engine runs at once on the CPU
    precision: Precision = "float32"  # matrix products on CUDA: float32, tf32 or bf16
    max_activation_mb: float = 256.0  # memory budget of one batched pass
    # Passes in child processes (process_engine.py), one per worker; "auto": for the models
    # whose lone pass is slow enough to gain from it (AUTO_PROCESS_PASS_S there).
    process: EngineProcess = False
    calls: CallThreads = field(default_factory=library_threads, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.engine not in get_args(EngineName):
            raise ValueError(f"engine: expected 'torch' or 'onnx', got '{self.engine}'")
        if self.precision not in get_args(Precision):
            raise ValueError(f"precision: expected float32, tf32 or bf16, got '{self.precision}'")
        if self.process not in (True, False, "auto"):
            raise ValueError(f"process: expected true, false or 'auto', got '{self.process}'")
        if self.threads < 0 or self.workers < 1 or not self.max_activation_mb > 0:
            raise ValueError("threads >= 0, workers >= 1 and max_activation_mb > 0 are required")
        if self.calls.workers != self.workers:  # replace() changed the workers
            calls = library_threads() if self.workers == 1 else CallThreads(self.workers)
            object.__setattr__(self, "calls", calls)

    @classmethod
    def from_settings(cls, settings: RuntimeSettings) -> EngineRuntime:
        return cls(
            engine=settings.engine,
            device=settings.device,
            threads=settings.num_threads,
            workers=settings.engine_workers,
            precision=settings.precision,
            max_activation_mb=settings.max_activation_mb,
            process=settings.engine_process,
        )

    @property
    def session_threads(self) -> int | None:
        """Intra-op threads of an onnxruntime session: the setting, or None for every core."""
        return self.threads or None


def threads_per_worker(num_threads: int | None, workers: int, cores: int) -> int | None:
    """Intra-op threads of each engine worker: the setting when given; otherwise torch's default
    (None) for one worker, and an equal share of the cores for several, so that workers x
    threads never exceeds the cores (an oversubscribed OpenMP team waits for its slowest
    thread at every region)."""
    if num_threads:
        return num_threads
    return None if workers <= 1 else max(1, cores // workers)

"""The torch MC dropout engine: T stochastic passes as one batched forward.

Inputs are replicated T times (rows ordered sample-major) and every (sample, row) gets its own
mask, a pure function of (seed, site, row, sample, element) defined in `masks` (numpy, on the
CPU) and computed bit for bit the same by `torch_masks` on an accelerator. Costs are kept close to
the bare matrix products:
- the layers before the first dropout site run once per row, then broadcast over T;
- Bernoulli masks are 16-bit random lanes compared with an integer threshold;
- 1/keep is folded into the next weight layer, so a mask only zeroes dropped units; on the CPU
  numpy draws each block of decisions and multiplies it into the activation while the block is
  still in L2, so no mask array is ever written;
- activations run in place; no per-sample Python loop.
Work is cut into chunks of at most `max_rows` stacked rows to bound memory.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from service.artifacts.manifest import GraphArchitecture, Manifest, load_weights
from service.engines import masks, torch_masks
from service.engines.base import (
    SampleJob,
    Segment,
    chunk_rows,
    plan_chunks,
    replication_index,
)
from service.engines.nets import MCDropout, build_net, expected_shapes
from service.errors import ArtifactError

_CACHE_CHUNK_BYTES = 4 * 2**20
_R = TypeVar("_R")
_TORCH_THREAD_PREFIX = "mcdrop-torch"
_torch_executor: ThreadPoolExecutor | None = None
_torch_workers = 1  # threads of that executor (MCDROP_ENGINE_WORKERS), see configure_threads
_torch_executor_lock = threading.Lock()
_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice, before anyone sets it


def on_torch_thread(fn: Callable[..., _R], *args: object) -> _R:
    """Run fn(*args) on one of the threads that do all of the engines' CPU torch work.

    libgomp (torch's OpenMP) keeps a team of worker threads for every thread that has run a
    parallel region, and once the process holds more OpenMP threads than cores it stops
    spinning between regions: each region then starts with a futex wake-up, which slows a small
    pass by about half (docs/performance.md). With every load and pass on these
    threads the process has one team per engine worker (one by default), whichever thread
    (event loop, batcher, test) asks.
    """
    global _torch_executor
    if threading.current_thread().name.startswith(_TORCH_THREAD_PREFIX):
        return fn(*args)
    with _torch_executor_lock:
        if _torch_executor is None:
            _torch_executor = ThreadPoolExecutor(
                _torch_workers, thread_name_prefix=_TORCH_THREAD_PREFIX
            )
        executor = _torch_executor
    return executor.submit(fn, *args).result()


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    return device


def threads_per_worker(num_threads: int | None, workers: int, cores: int) -> int | None:
    """Intra-op threads of each engine worker: the setting when given; otherwise torch's default
    (None) for one worker, and an equal share of the cores for several, so that workers x
    threads never exceeds the cores (an oversubscribed OpenMP team waits for its slowest
    thread at every region)."""
    if num_threads:
        return num_threads
    return None if workers <= 1 else max(1, cores // workers)


def configure_threads(num_threads: int | None, workers: int = 1) -> None:
    """Apply the thread settings once at start-up, before any engine is built.

    workers: how many MC passes may run at once on the CPU, each on its own torch thread
    (MCDROP_ENGINE_WORKERS). num_threads sets torch's intra-op pool of each (0 or None: torch's
    default, one per core, for one worker; cores / workers for several); the mask filler of each
    engine built afterwards uses the same count. One inter-op thread: a second pool would only
    compete for the cores.
    """
    global _torch_executor, _torch_workers
    threads = threads_per_worker(num_threads, workers, os.cpu_count() or 1)
    torch.set_num_threads(threads or _TORCH_DEFAULT_THREADS)
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)
    with _torch_executor_lock:
        if workers != _torch_workers:
            _torch_workers = workers
            old, _torch_executor = _torch_executor, None  # the next call starts the new pool
            if old is not None:
                old.shutdown(wait=False)  # its running call, if any, still finishes


def _matmul_dtype(precision: str, device: str) -> torch.dtype:
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
def _matmul_tf32(enabled: bool) -> Iterator[None]:
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


@dataclass(frozen=True)
class Site:
    index: int  # position of the MCDropout module in the body
    site: int  # dropout site number in the whole network (keys its masks)
    keep_prob: float
    noise: str
    shape: tuple[int, ...]  # activation shape per row at this site

    @functools.cached_property
    def elements(self) -> int:
        # Read on every pass for every site: math.prod, as np.prod's call overhead is far larger.
        return math.prod(self.shape)


class TorchEngine:
    """Runs a dropout network's MC passes with torch, on the CPU or a CUDA device."""

    name = "torch"

    def __init__(
        self,
        net: nn.Sequential,
        input_shape: list[int],
        device: str = "auto",
        max_activation_mb: float = 256.0,
        precision: str = "float32",
    ) -> None:
        self.device = resolve_device(device)
        self._dtype = _matmul_dtype(precision, self.device)
        self._tf32 = precision == "tf32"
        # A copy: the caller's module stays where it was, in the mode it was in.
        self._net = copy.deepcopy(net).eval().to(self.device)
        mc = copy.deepcopy(self._net)
        first_site = next((i for i, m in enumerate(mc) if isinstance(m, MCDropout)), None)
        if first_site is None:
            raise ValueError("the network has no dropout site: MC dropout needs at least one")
        self._prefix = nn.Sequential(*list(mc)[:first_site])
        self._body = list(mc)[first_site:]
        self._sites = self._describe_sites(input_shape, first_site)
        self._fold_keep_into_weights()
        for mod in self._body:
            mod.to(self._dtype)
        widest = self._widest_activation(input_shape)
        self._out_features = self._net(torch.zeros(1, *input_shape, device=self.device)).shape[1]
        # Per stacked row a pass holds two activations (a layer's input and output) and every
        # site's noise for the chunk: float32 Gaussian noise; Bernoulli masks are applied in
        # place on the CPU (nothing held) and held as the pass dtype on an accelerator.
        itemsize = torch.empty((), dtype=self._dtype).element_size()
        noise_bytes = sum(
            0 if s.noise == "bernoulli" and self.device == "cpu" else 4 * s.elements
            for s in self._sites.values()
        )
        self.bytes_per_row = 2 * itemsize * widest + noise_bytes
        budget_rows = int(max_activation_mb * 2**20 // self.bytes_per_row)
        # On the CPU a chunk also stays near cache size: the mask and ReLU passes then re-read
        # an activation from L2/L3 instead of memory (measured 5-10% faster at 7,680 rows).
        cache_rows = (
            _CACHE_CHUNK_BYTES // (itemsize * widest) if self.device == "cpu" else budget_rows
        )
        self.max_rows = max(1, min(budget_rows, cache_rows))
        self._filler = masks.MaskFiller(torch.get_num_threads() if self.device == "cpu" else 1)

    # ------------------------------------------------------------------ structure

    @property
    def prefix(self) -> nn.Sequential:
        """Layers before the first dropout site (run once per row)."""
        return self._prefix

    @property
    def body(self) -> list[nn.Module]:
        """The rest, starting at the first site, with 1/keep folded into weights."""
        return self._body

    @property
    def sites(self) -> dict[int, Site]:
        """Dropout sites by their position in `body`."""
        return self._sites

    # ------------------------------------------------------------------ set-up

    @torch.inference_mode()
    def _describe_sites(self, input_shape: list[int], first_site: int) -> dict[int, Site]:
        h = self._prefix(torch.zeros(1, *input_shape, device=self.device))
        sites: dict[int, Site] = {}
        n_site = 0
        for i, mod in enumerate(self._body):
            if isinstance(mod, MCDropout):
                sites[i] = Site(i, n_site, mod.keep_prob, mod.noise, tuple(h.shape[1:]))
                n_site += 1
            else:
                h = mod(h)
        return sites

    @torch.inference_mode()
    def _widest_activation(self, input_shape: list[int]) -> int:
        h = torch.zeros(1, *input_shape, device=self.device)
        widest = int(h.numel())
        h = self._prefix(h).to(self._dtype)
        for mod in self._body:
            h = mod(h)
            widest = max(widest, int(h.numel()))
        return widest

    @torch.inference_mode()
    def _fold_keep_into_weights(self) -> None:
        """Inverted dropout divides kept units by keep; fold that into the next weight matrix.

        Only the weight, not the bias, and valid through ReLU, max-pool and flatten, which
        commute with a positive scale. Gaussian noise already has mean 1 and is left alone.
        """
        pending: float | None = None
        for mod in self._body:
            if isinstance(mod, MCDropout):
                pending = 1.0 / mod.keep_prob if mod.noise == "bernoulli" else None
            elif isinstance(mod, nn.Linear | nn.Conv2d) and pending is not None:
                mod.weight.mul_(pending)
                pending = None

    # ------------------------------------------------------------------ passes

    def deterministic(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.device == "cpu":
            return on_torch_thread(self._deterministic, x)
        with _matmul_tf32(self._tf32):
            return self._deterministic(x)

    @torch.inference_mode()
    def _deterministic(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        out = self._net(torch.as_tensor(x, device=self.device))
        result: NDArray[np.float32] = out.float().cpu().numpy()
        return result

    def sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        if self.device == "cpu":
            return on_torch_thread(self._sample_many, jobs)
        with _matmul_tf32(self._tf32):
            return self._sample_many(jobs)

    @torch.inference_mode()
    def _sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        xs = torch.as_tensor(np.concatenate([j.x for j in jobs]), device=self.device)
        pre = self._prefix(xs).to(self._dtype)  # once per row, broadcast over T below
        outputs = [np.empty((j.samples, j.rows, self._out_features), np.float32) for j in jobs]
        for chunk in plan_chunks([(j.rows, j.samples) for j in jobs], self.max_rows):
            rows = chunk_rows(chunk, jobs)
            noise = self._draw_noise(rows)
            h = self._first_site(chunk, jobs, pre)
            for i, mod in enumerate(self._body):
                site = self._sites.get(i)
                if site is not None:
                    h = self._apply(h, site, rows, noise[site.site])
                elif isinstance(mod, nn.ReLU):
                    h.relu_()
                else:
                    h = mod(h)
            block = h.float().cpu().numpy()
            start = 0
            for s in chunk:
                job = jobs[s.job]
                stop = start + (s.t1 - s.t0) * job.rows
                outputs[s.job][s.t0 : s.t1] = block[start:stop].reshape(s.t1 - s.t0, job.rows, -1)
                start = stop
        return outputs

    def _first_site(
        self, chunk: list[Segment], jobs: list[SampleJob], pre: torch.Tensor
    ) -> torch.Tensor:
        """Replicate each segment's rows over its samples (the first site's noise comes next).

        One gather for the whole chunk: a copy per segment pays Python overhead per request,
        a visible share of a pass of many one-row requests.
        """
        index = torch.from_numpy(replication_index(chunk, jobs)).to(self.device)
        return pre.index_select(0, index)

    def _apply(
        self, h: torch.Tensor, site: Site, rows: masks.MaskRows, noise: torch.Tensor | None
    ) -> torch.Tensor:
        if noise is not None:  # Gaussian noise, or any noise on an accelerator: a multiplier
            return h.mul_(noise.view(h.shape))
        # Bernoulli on the CPU: drawn and applied in place by numpy, block by block (see
        # masks.apply_keep), on as many threads as torch uses. h is a fresh contiguous
        # activation, so its numpy view shares the memory.
        h = h.contiguous()
        self._filler.apply(h.view(len(rows), -1).numpy(), rows, site.site, site.keep_prob)
        return h

    def _draw_noise(self, rows: masks.MaskRows) -> list[torch.Tensor | None]:
        """Every site's multiplicative noise for this chunk, (rows, elements); None for the
        Bernoulli sites of a CPU pass, which `_apply` draws in place."""
        if self.device != "cpu":
            return self._device_noise(rows)
        return [
            None
            if site.noise == "bernoulli"
            else torch.from_numpy(
                masks.gaussian_noise(rows, site.site, site.elements, site.keep_prob)
            )
            for site in self._sites.values()
        ]

    def _device_noise(self, rows: masks.MaskRows) -> list[torch.Tensor | None]:
        """Every site's masks computed on the accelerator by the same rule as on the CPU: one
        host-to-device copy of the rows' stream positions per chunk, then a few elementwise
        kernels per site, however many requests share the chunk."""
        sites = list(self._sites.values())
        host = np.stack(
            [rows.bases(s.site, masks.words_per_slot(s.elements, s.noise)) for s in sites]
        )
        bases = torch_masks.bases_tensor(host, self.device)
        drawn: list[torch.Tensor | None] = []
        for k, site in enumerate(sites):
            if site.noise == "bernoulli":
                drawn.append(
                    torch_masks.keep_mask(bases[k], site.elements, site.keep_prob, self._dtype)
                )
            else:
                noise = torch_masks.gaussian_noise(bases[k], site.elements, site.keep_prob)
                drawn.append(noise.to(self._dtype))
        return drawn


def build_from_manifest(folder: Path, manifest: Manifest) -> nn.Sequential:
    """Rebuild the network the manifest describes and load its verified weights."""
    if isinstance(manifest.architecture, GraphArchitecture) or manifest.dropout is None:
        raise ArtifactError(f"{folder}: a graph folder runs on the onnx engine, not torch")
    net = build_net(manifest.architecture, manifest.dropout)
    tensors = load_weights(folder, manifest, expected_shapes(net))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    return net


def load_torch_engine(
    folder: Path,
    manifest: Manifest,
    device: str,
    max_activation_mb: float,
    precision: str = "float32",
) -> TorchEngine:
    def load() -> TorchEngine:
        net = build_from_manifest(folder, manifest)
        return TorchEngine(net, manifest.input_shape, device, max_activation_mb, precision)

    # Loading runs parallel regions too (weight copies, the folding of 1/keep): on the torch
    # thread, so it adds no OpenMP team of its own (see on_torch_thread).
    return on_torch_thread(load) if resolve_device(device) == "cpu" else load()

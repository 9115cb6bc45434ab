"""The torch MC dropout engine: T stochastic passes as one batched forward.

Inputs are replicated T times (rows ordered sample-major) and every (sample, row) gets its own
mask, a pure function of (seed, site, row, sample, element) defined in `masks` and drawn by a
`mask_strategy` (numpy on the CPU, torch ops on an accelerator, bit for bit the same). Costs are
kept close to the bare matrix products:
- the layers before the first dropout site run once per row, then broadcast over T;
- Bernoulli masks are 16-bit random lanes compared with an integer threshold;
- 1/keep is folded into the next weight layer, so a mask only zeroes dropped units;
- activations run in place; no per-sample Python loop.
Work is cut into chunks of at most `max_rows` stacked rows to bound memory.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from service.artifacts.manifest import GraphArchitecture, Manifest, load_weights
from service.engines.base import (
    SampleJob,
    Segment,
    chunk_rows,
    plan_chunks,
    replication_index,
)
from service.engines.mask_strategy import AcceleratorMasks, CpuMasks, MaskStrategy, Site
from service.engines.nets import MCDropout, build_net, expected_shapes
from service.engines.runtime import EngineRuntime
from service.engines.torch_runtime import matmul_dtype, resolve_device
from service.errors import ArtifactError

__all__ = ["Site", "TorchEngine", "build_from_manifest", "load_torch_engine"]


class TorchEngine:
    """Runs a dropout network's MC passes with torch, on the CPU or a CUDA device."""

    name = "torch"

    def __init__(
        self, net: nn.Sequential, input_shape: list[int], runtime: EngineRuntime | None = None
    ) -> None:
        runtime = runtime or EngineRuntime()
        self.device = resolve_device(runtime.device)
        self._dtype = matmul_dtype(runtime.precision, self.device)
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
        self.mask_strategy = self._mask_strategy(runtime)
        self._out_features = self._net(torch.zeros(1, *input_shape, device=self.device)).shape[1]
        self._size_chunks(input_shape, runtime.max_activation_mb)

    def _mask_strategy(self, runtime: EngineRuntime) -> MaskStrategy:
        sites = list(self._sites.values())
        if self.device == "cpu":
            return CpuMasks(sites, runtime.calls, torch.get_num_threads())
        return AcceleratorMasks(sites, self.device, self._dtype, runtime.precision == "tf32")

    def _size_chunks(self, input_shape: list[int], max_activation_mb: float) -> None:
        """Set `bytes_per_row` and `max_rows`: per stacked row a pass holds two activations (a
        layer's input and output) and the noise the mask strategy keeps for the chunk."""
        widest = self._widest_activation(input_shape)
        itemsize = torch.empty((), dtype=self._dtype).element_size()
        noise_bytes = sum(self.mask_strategy.held_bytes(s) for s in self._sites.values())
        self.bytes_per_row = 2 * itemsize * widest + noise_bytes
        budget_rows = int(max_activation_mb * 2**20 // self.bytes_per_row)
        self.max_rows = self.mask_strategy.max_rows(budget_rows, itemsize * widest)

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
        return self.mask_strategy.run(self._deterministic, x)

    @torch.inference_mode()
    def _deterministic(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        out = self._net(torch.as_tensor(x, device=self.device))
        result: NDArray[np.float32] = out.float().cpu().numpy()
        return result

    def sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        return self.mask_strategy.run(self._sample_many, jobs)

    @torch.inference_mode()
    def _sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        xs = torch.as_tensor(np.concatenate([j.x for j in jobs]), device=self.device)
        pre = self._prefix(xs).to(self._dtype)  # once per row, broadcast over T below
        outputs = [np.empty((j.samples, j.rows, self._out_features), np.float32) for j in jobs]
        for chunk in plan_chunks([(j.rows, j.samples) for j in jobs], self.max_rows):
            block = self._run_chunk(chunk, jobs, pre)
            start = 0
            for s in chunk:
                job = jobs[s.job]
                stop = start + (s.t1 - s.t0) * job.rows
                outputs[s.job][s.t0 : s.t1] = block[start:stop].reshape(s.t1 - s.t0, job.rows, -1)
                start = stop
        return outputs

    def _run_chunk(
        self, chunk: list[Segment], jobs: list[SampleJob], pre: torch.Tensor
    ) -> NDArray[np.float32]:
        """One chunk's stacked rows through the body, every site's noise applied: (rows, D)."""
        rows = chunk_rows(chunk, jobs)
        noise = self.mask_strategy.draw(rows)
        h = self._first_site(chunk, jobs, pre)
        for i, mod in enumerate(self._body):
            site = self._sites.get(i)
            if site is not None:
                h = self.mask_strategy.apply(h, site, rows, noise[site.site])
            elif isinstance(mod, nn.ReLU):
                h.relu_()
            else:
                h = mod(h)
        block: NDArray[np.float32] = h.float().cpu().numpy()
        return block

    def _first_site(
        self, chunk: list[Segment], jobs: list[SampleJob], pre: torch.Tensor
    ) -> torch.Tensor:
        """Replicate each segment's rows over its samples (the first site's noise comes next).

        One gather for the whole chunk: a copy per segment pays Python overhead per request,
        a visible share of a pass of many one-row requests.
        """
        index = torch.from_numpy(replication_index(chunk, jobs)).to(self.device)
        return pre.index_select(0, index)


def build_from_manifest(folder: Path, manifest: Manifest) -> nn.Sequential:
    """Rebuild the network the manifest describes and load its verified weights."""
    if isinstance(manifest.architecture, GraphArchitecture) or manifest.dropout is None:
        raise ArtifactError(f"{folder}: a graph folder runs on the onnx engine, not torch")
    net = build_net(manifest.architecture, manifest.dropout)
    tensors = load_weights(folder, manifest, expected_shapes(net))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    return net


def load_torch_engine(folder: Path, manifest: Manifest, runtime: EngineRuntime) -> TorchEngine:
    def load() -> TorchEngine:
        return TorchEngine(build_from_manifest(folder, manifest), manifest.input_shape, runtime)

    if resolve_device(runtime.device) != "cpu":
        return load()
    # Loading runs parallel regions too (weight copies, the folding of 1/keep): on the
    # runtime's torch threads, so it adds no OpenMP team of its own (see CallThreads).
    return runtime.calls.run(load)

"""The torch MC dropout engine: T stochastic passes as one batched forward.

Inputs are replicated T times (rows ordered sample-major) and every (sample, row) gets its own
mask, drawn from the streams in `masks`. Costs are kept close to the bare matrix products:
- the layers before the first dropout site run once per row, then broadcast over T;
- Bernoulli masks are 16-bit random lanes compared with an integer threshold;
- 1/keep is folded into the next weight layer, so a mask is applied with one masked_fill_;
- activations run in place; no per-sample Python loop.
Work is cut into chunks of at most `max_rows` stacked rows to bound memory.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from service.artifact import Manifest, load_weights
from service.engines import masks
from service.engines.base import SampleJob, Segment, plan_chunks
from service.nets import MCDropout, build_net, expected_shapes

# Per stacked row we hold the activation, the next activation and the mask (uint16 lanes plus
# the bool comparison): about 3 float32 copies of the widest activation.
_BYTES_PER_ACTIVATION = 4 * 3


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device")
    return device


def configure_threads(num_threads: int | None) -> None:
    """Apply the intra-op thread count once at start-up (0 or None keeps torch's default)."""
    if num_threads:
        torch.set_num_threads(num_threads)


@dataclass(frozen=True)
class _Site:
    index: int  # position of the MCDropout module in the body
    site: int  # dropout site number in the whole network (keys the random stream)
    keep_prob: float
    noise: str
    elements: int  # elements per row at this site


class TorchEngine:
    """Runs a dropout network's MC passes with torch, on the CPU or a CUDA device."""

    name = "torch"

    def __init__(
        self,
        net: nn.Sequential,
        input_shape: list[int],
        device: str = "auto",
        max_activation_mb: float = 256.0,
    ) -> None:
        self.device = resolve_device(device)
        self._net = net.eval().to(self.device)
        mc = copy.deepcopy(self._net)
        first_site = next((i for i, m in enumerate(mc) if isinstance(m, MCDropout)), None)
        if first_site is None:
            raise ValueError("the network has no dropout site: MC dropout needs at least one")
        self._prefix = nn.Sequential(*list(mc)[:first_site])
        self._body = list(mc)[first_site:]
        self._sites = self._describe_sites(input_shape, first_site)
        self._fold_keep_into_weights()
        widest = self._widest_activation(input_shape)
        self.max_rows = max(1, int(max_activation_mb * 2**20 // (widest * _BYTES_PER_ACTIVATION)))

    # ------------------------------------------------------------------ set-up

    @torch.inference_mode()
    def _describe_sites(self, input_shape: list[int], first_site: int) -> dict[int, _Site]:
        h = self._prefix(torch.zeros(1, *input_shape, device=self.device))
        sites: dict[int, _Site] = {}
        n_site = 0
        for i, mod in enumerate(self._body):
            if isinstance(mod, MCDropout):
                sites[i] = _Site(i, n_site, mod.keep_prob, mod.noise, int(h[0].numel()))
                n_site += 1
            else:
                h = mod(h)
        return sites

    @torch.inference_mode()
    def _widest_activation(self, input_shape: list[int]) -> int:
        h = torch.zeros(1, *input_shape, device=self.device)
        widest = int(h.numel())
        for mod in [*self._prefix, *self._body]:
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

    @torch.inference_mode()
    def deterministic(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        out = self._net(torch.as_tensor(x, device=self.device))
        result: NDArray[np.float32] = out.float().cpu().numpy()
        return result

    @torch.inference_mode()
    def sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        xs = torch.as_tensor(np.concatenate([j.x for j in jobs]), device=self.device)
        pre = self._prefix(xs)  # once per row, broadcast over T below
        per_job = list(torch.split(pre, [j.rows for j in jobs]))
        outputs: list[NDArray[np.float32] | None] = [None] * len(jobs)
        for chunk in plan_chunks([(j.rows, j.samples) for j in jobs], self.max_rows):
            h = torch.cat([self._replicate(per_job[s.job], s.t1 - s.t0) for s in chunk])
            for i, mod in enumerate(self._body):
                site = self._sites.get(i)
                if site is not None:
                    h = self._apply_noise(h, site, chunk, jobs)
                elif isinstance(mod, nn.ReLU):
                    h.relu_()
                else:
                    h = mod(h)
            block = h.float().cpu().numpy()
            start = 0
            for s in chunk:
                job = jobs[s.job]
                stop = start + (s.t1 - s.t0) * job.rows
                out = outputs[s.job]
                if out is None:
                    out = np.empty((job.samples, job.rows, block.shape[1]), np.float32)
                    outputs[s.job] = out
                out[s.t0 : s.t1] = block[start:stop].reshape(s.t1 - s.t0, job.rows, -1)
                start = stop
        return [o for o in outputs if o is not None]

    @staticmethod
    def _replicate(rows: torch.Tensor, times: int) -> torch.Tensor:
        return rows.repeat(times, *([1] * (rows.dim() - 1)))

    def _apply_noise(
        self, h: torch.Tensor, site: _Site, chunk: list[Segment], jobs: list[SampleJob]
    ) -> torch.Tensor:
        parts: list[NDArray[np.bool_] | NDArray[np.float32]] = []
        for s in chunk:
            n = jobs[s.job].rows
            offset = (jobs[s.job].first_sample + s.t0) * n * site.elements
            count = (s.t1 - s.t0) * n * site.elements
            seed = jobs[s.job].seed
            if site.noise == "bernoulli":
                parts.append(masks.drop_mask(seed, site.site, offset, count, site.keep_prob))
            else:
                parts.append(masks.gaussian_noise(seed, site.site, offset, count, site.keep_prob))
        noise = torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0])
        noise = noise.to(self.device, non_blocking=True).view(h.shape)
        if site.noise == "bernoulli":
            return h.masked_fill_(noise, 0.0)
        return h.mul_(noise)


def build_from_manifest(folder: Path, manifest: Manifest) -> nn.Sequential:
    """Rebuild the network the manifest describes and load its verified weights."""
    net = build_net(manifest.architecture, manifest.dropout)
    tensors = load_weights(folder, manifest, expected_shapes(net))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    return net


def load_torch_engine(
    folder: Path, manifest: Manifest, device: str, max_activation_mb: float
) -> TorchEngine:
    net = build_from_manifest(folder, manifest)
    return TorchEngine(net, manifest.input_shape, device, max_activation_mb)

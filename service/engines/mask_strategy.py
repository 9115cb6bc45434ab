"""How the torch engine's dropout noise reaches a pass: drawn on the CPU or on the accelerator.

Both strategies draw the same masks (the rule of `masks`), so they give the same samples; they
differ in where the words are computed, what a chunk holds in memory, and which thread runs the
pass. The engine picks one when it is built and never asks which device it is on again.
- `CpuMasks`: numpy draws each Bernoulli block and multiplies it into the activation in place
  (nothing held), chunks stay near cache size, and passes run on the runtime's torch threads.
- `AcceleratorMasks`: torch ops draw every site's noise for a chunk on the device (held as the
  pass dtype), chunks fill the memory budget, and passes run under the TF32 setting.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch

from service.engines import masks, torch_masks
from service.engines.base import CACHE_CHUNK_BYTES
from service.engines.mask_filler import MaskFiller
from service.engines.runtime import CallThreads
from service.engines.torch_runtime import matmul_tf32

_R = TypeVar("_R")


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


class MaskStrategy(Protocol):
    """Where a pass's dropout noise is drawn and applied, and where the pass runs."""

    def run(self, fn: Callable[..., _R], *args: object) -> _R:
        """fn(*args), where this device's passes run."""
        ...

    def held_bytes(self, site: Site) -> int:
        """Bytes of this site's noise a chunk holds per stacked row."""
        ...

    def max_rows(self, budget_rows: int, activation_bytes: int) -> int:
        """Stacked rows per chunk, given the memory budget's and the widest activation's bytes."""
        ...

    def draw(self, rows: masks.MaskRows) -> list[torch.Tensor | None]:
        """Every site's noise for a chunk, (rows, elements), in site order; None where `apply`
        draws it itself."""
        ...

    def apply(
        self, h: torch.Tensor, site: Site, rows: masks.MaskRows, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """h with the site's noise applied (in place where it can be)."""
        ...


class CpuMasks:
    """numpy masks on the CPU; Bernoulli masks are applied block by block, never stored."""

    def __init__(self, sites: list[Site], calls: CallThreads, threads: int) -> None:
        self._sites = sites
        self._calls = calls
        self._filler = MaskFiller(threads)

    def run(self, fn: Callable[..., _R], *args: object) -> _R:
        return self._calls.run(fn, *args)

    def held_bytes(self, site: Site) -> int:
        return 0 if site.noise == "bernoulli" else 4 * site.elements

    def max_rows(self, budget_rows: int, activation_bytes: int) -> int:
        return max(1, min(budget_rows, CACHE_CHUNK_BYTES // activation_bytes))

    def draw(self, rows: masks.MaskRows) -> list[torch.Tensor | None]:
        return [
            None
            if site.noise == "bernoulli"
            else torch.from_numpy(
                masks.gaussian_noise(rows, site.site, site.elements, site.keep_prob)
            )
            for site in self._sites
        ]

    def apply(
        self, h: torch.Tensor, site: Site, rows: masks.MaskRows, noise: torch.Tensor | None
    ) -> torch.Tensor:
        if noise is not None:  # Gaussian noise: a multiplier
            return h.mul_(noise.view(h.shape))
        # Bernoulli: drawn and applied in place by numpy, block by block (masks.apply_keep), on
        # as many threads as torch uses. h is a fresh contiguous activation, so its numpy view
        # shares the memory.
        h = h.contiguous()
        self._filler.apply(h.view(len(rows), -1).numpy(), rows, site.site, site.keep_prob)
        return h


class AcceleratorMasks:
    """The same masks computed on the device by torch ops (torch_masks): one host-to-device
    copy of the rows' stream positions per chunk, then a few elementwise kernels per site,
    however many requests share the chunk."""

    def __init__(self, sites: list[Site], device: str, dtype: torch.dtype, tf32: bool) -> None:
        self._sites = sites
        self._device = device
        self._dtype = dtype
        self._tf32 = tf32

    def run(self, fn: Callable[..., _R], *args: object) -> _R:
        with matmul_tf32(self._tf32):
            return fn(*args)

    def held_bytes(self, site: Site) -> int:
        return 4 * site.elements

    def max_rows(self, budget_rows: int, activation_bytes: int) -> int:
        return max(1, budget_rows)

    def draw(self, rows: masks.MaskRows) -> list[torch.Tensor | None]:
        host = np.stack(
            [rows.bases(s.site, masks.words_per_slot(s.elements, s.noise)) for s in self._sites]
        )
        bases = torch_masks.bases_tensor(host, self._device)
        drawn: list[torch.Tensor | None] = []
        for k, site in enumerate(self._sites):
            if site.noise == "bernoulli":
                drawn.append(
                    torch_masks.keep_mask(bases[k], site.elements, site.keep_prob, self._dtype)
                )
            else:
                noise = torch_masks.gaussian_noise(bases[k], site.elements, site.keep_prob)
                drawn.append(noise.to(self._dtype))
        return drawn

    def apply(
        self, h: torch.Tensor, site: Site, rows: masks.MaskRows, noise: torch.Tensor | None
    ) -> torch.Tensor:
        assert noise is not None  # `draw` gives every site's noise
        return h.mul_(noise.view(h.shape))

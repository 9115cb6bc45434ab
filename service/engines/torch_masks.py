"""The mask rule of masks.py in torch ops, so masks can be drawn where the pass runs (CUDA).

Same words, lanes and thresholds as the numpy version, bit for bit: torch has no unsigned
64-bit arithmetic, so words live in int64, where addition and multiplication wrap exactly as
uint64 does, and a logical right shift is an arithmetic one with the sign bits masked off.
One call draws a site's mask for a whole chunk: a handful of elementwise kernels, whatever the
number of requests in it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray

from service.engines import masks


def _signed(v: int) -> int:
    """The int64 with the same bits as the uint64 v."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


_GAMMA = _signed(masks.GAMMA)
_MIX = ((30, _signed(masks.MIX1)), (27, _signed(masks.MIX2)), (31, 0))


def bases_tensor(bases: NDArray[np.uint64], device: torch.device | str) -> torch.Tensor:
    """masks.MaskRows.bases(...) as an int64 tensor on `device` (same bits)."""
    host = torch.from_numpy(bases.view(np.int64))
    if torch.device(device).type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def mask_words(bases: torch.Tensor, words: int) -> torch.Tensor:
    """(rows, words) int64: word w of each row is mix64(base + w * GAMMA)."""
    offsets = torch.arange(words, dtype=torch.int64, device=bases.device).mul_(_GAMMA)
    x = bases[:, None] + offsets[None, :]
    for shift, mult in _MIX:
        # logical shift: the arithmetic one, with the copied sign bits cleared
        x ^= (x >> shift) & ((1 << (64 - shift)) - 1)
        if mult:
            x *= mult
    return x


def keep_mask(
    bases: torch.Tensor, elements: int, keep_prob: float, dtype: torch.dtype
) -> torch.Tensor:
    """(rows, elements) of 1 (kept) and 0 (dropped), in `dtype`."""
    words = masks.words_per_slot(elements, "bernoulli")
    x = mask_words(bases, words)
    lanes = x.view(torch.int16)[:, :elements]  # little-endian: lane e is bits 16(e mod 4)...
    thr = masks.keep_threshold(keep_prob)
    return ((lanes.to(torch.int32) & 0xFFFF) < thr).to(dtype)


def gaussian_noise(bases: torch.Tensor, elements: int, keep_prob: float) -> torch.Tensor:
    """(rows, elements) float32 of N(1, (1-p)/p), Box-Muller in float64 as the numpy version."""
    words = masks.words_per_slot(elements, "gaussian")
    x = mask_words(bases, words)
    u1 = (((x >> 32) & 0xFFFFFFFF).to(torch.float64) + 0.5) / 2.0**32
    u2 = ((x & 0xFFFFFFFF).to(torch.float64) + 0.5) / 2.0**32
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    std = math.sqrt((1.0 - keep_prob) / keep_prob)
    return (1.0 + std * z).to(torch.float32)

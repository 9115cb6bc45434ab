"""Dropout masks as a pure function of (seed, site, row, sample, element), in numpy (no torch).

The rule, identical on every device (service/engines/torch_masks.py computes it with torch ops):
- a row of a request and one of its samples form a slot, `row * SAMPLE_SPAN + sample`, where
  row is the row's index in the request and sample its sample index;
- a site's mask for one slot reads `words` consecutive 64-bit words of the (seed, site) stream:
  word w of slot s is `mix64(key + (s * words + w) * GAMMA)`, with key a keyed hash of (seed,
  site) and mix64 SplitMix64's finaliser, so the stream is SplitMix64 positioned by counter;
- Bernoulli(keep) element e of a slot is `lane e < round(keep * 2^16)`, lane e being bits
  16(e mod 4) .. 16(e mod 4) + 15 of word e // 4 (four elements per word);
- Gaussian noise N(1, (1-p)/p) takes one word per element, Box-Muller on its two 32-bit halves.

So a row's sample k has the same mask whether it is drawn alone, in a batch, in any chunk, in
any adaptive round, on the CPU or a GPU; and two different slots never read the same word
(the counter is injective while rows < 2^20, samples < 2^24 and words < 2^20, checked below).
The probability of keeping is off by at most 2^-17 (7.6e-6) from the threshold's rounding.

Callers describe which slot and seed each stacked row of a pass has (`MaskRows`, built by
service.engines.base.chunk_rows) and ask for one site's mask: `keep_mask` (fill a buffer),
`apply_keep` (multiply into an activation in place) or `gaussian_noise`; `mask_filler.MaskFiller`
spreads the first two over threads.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LANE_BITS = 16
LANES_PER_WORD = 64 // LANE_BITS
LANE_RANGE = 1 << LANE_BITS
ROW_LIMIT = 1 << 20
SAMPLE_SPAN = 1 << 24  # slot = row * SAMPLE_SPAN + sample
WORD_LIMIT = 1 << 20
# SplitMix64: the Weyl increment and the two multipliers of its finaliser.
GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
_U64 = (1 << 64) - 1

if sys.byteorder != "little":  # lanes are read through a uint16 view of the words
    raise ImportError("mask lanes assume a little-endian machine")


def keep_threshold(keep_prob: float) -> int:
    """Integer threshold t with P(lane < t) = t / 2^16 closest to keep_prob."""
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    return round(keep_prob * LANE_RANGE)


def quantised_keep(keep_prob: float) -> float:
    """The keep probability the integer threshold actually realises."""
    return keep_threshold(keep_prob) / LANE_RANGE


def words_per_slot(elements: int, noise: str) -> int:
    """64-bit words one slot reads at a site: four Bernoulli elements or one Gaussian per word."""
    words = -(-elements // LANES_PER_WORD) if noise == "bernoulli" else elements
    if words >= WORD_LIMIT:
        raise ValueError(f"a dropout site of {elements} elements is too wide for the mask rule")
    return words


@functools.lru_cache(maxsize=64)
def _stride(words: int) -> np.uint64:
    return np.uint64(words * GAMMA & _U64)


@functools.lru_cache(maxsize=4096)
def site_key(seed: int, site: int) -> int:
    """The 64-bit key of the (seed, site) stream: a keyed hash, so nearby seeds or sites give
    unrelated streams (cached: a batch asks once per request and site, and hashing is not free)."""
    digest = hashlib.blake2b(f"mcdrop-masks/{seed}/{site}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class MaskRows:
    """The stream of every stacked row of a pass: which request seed, and which slot."""

    seeds: tuple[int, ...]  # the pass's request seeds
    seed_index: NDArray[np.intp]  # (rows,): each stacked row's seed, an index into `seeds`
    slots: NDArray[np.uint64]  # (rows,): row * SAMPLE_SPAN + sample

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def bases(self, site: int, words: int) -> NDArray[np.uint64]:
        """Per stacked row, key + slot * words * GAMMA (mod 2^64): word w of the row's mask at
        this site is mix64(base + w * GAMMA)."""
        out: NDArray[np.uint64] = self.slots * _stride(words)
        if len(self.seeds) == 1:  # one request: a scalar key, no gather
            out += np.uint64(site_key(self.seeds[0], site))
        else:
            keys = np.array([site_key(s, site) for s in self.seeds], np.uint64)
            out += keys[self.seed_index]
        return out

    def part(self, start: int, stop: int) -> MaskRows:
        """Stacked rows [start, stop) (threads fill disjoint parts)."""
        return MaskRows(self.seeds, self.seed_index[start:stop], self.slots[start:stop])


def make_rows(seed: int, rows: NDArray[np.integer], samples: NDArray[np.integer]) -> MaskRows:
    """MaskRows for one seed: stacked row i is request row rows[i], sample samples[i]."""
    r = np.asarray(rows, np.int64)
    s = np.asarray(samples, np.int64)
    if r.size and (r.min() < 0 or r.max() >= ROW_LIMIT or s.min() < 0 or s.max() >= SAMPLE_SPAN):
        raise ValueError(f"mask rows need 0 <= row < {ROW_LIMIT} and 0 <= sample < {SAMPLE_SPAN}")
    slots = (r * SAMPLE_SPAN + s).astype(np.uint64)
    return MaskRows((seed,), np.zeros(slots.shape, np.intp), slots)


# ---------------------------------------------------------------- the words, block by block

# 2^16 words (512 KiB) per block: a block's words, lanes and decisions stay in L2 between the
# hashing, the comparison and the multiply, and no large temporary is allocated.
_BLOCK_WORDS = 1 << 16
_scratch = threading.local()


@functools.lru_cache(maxsize=64)
def _offsets(words: int) -> NDArray[np.uint64]:
    """w * GAMMA (mod 2^64) for w < words."""
    return np.arange(words, dtype=np.uint64) * np.uint64(GAMMA)


def _buffers(size: int) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """This thread's word and scratch buffers of at least `size` words, allocated once (a fresh
    512 KiB array is a fresh mapping from the kernel on every call)."""
    bufs: tuple[NDArray[np.uint64], NDArray[np.uint64]] | None = getattr(_scratch, "words", None)
    if bufs is None or bufs[0].size < size:
        bufs = _scratch.words = (np.empty(size, np.uint64), np.empty(size, np.uint64))
    return bufs


_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_M1, _M2 = np.uint64(MIX1), np.uint64(MIX2)


def _mix64(x: NDArray[np.uint64], tmp: NDArray[np.uint64]) -> None:
    """SplitMix64's finaliser, in place (tmp: scratch of the same shape)."""
    np.right_shift(x, _S30, out=tmp)
    np.bitwise_xor(x, tmp, out=x)
    np.multiply(x, _M1, out=x)
    np.right_shift(x, _S27, out=tmp)
    np.bitwise_xor(x, tmp, out=x)
    np.multiply(x, _M2, out=x)
    np.right_shift(x, _S31, out=tmp)
    np.bitwise_xor(x, tmp, out=x)


def _words(bases: NDArray[np.uint64], words: int) -> NDArray[np.uint64]:
    """The (len(bases), words) mask words of these rows, in this thread's scratch buffer."""
    n = len(bases) * words
    buf, tmp = _buffers(max(n, _BLOCK_WORDS))
    x = buf[:n].reshape(len(bases), words)
    np.add(bases[:, None], _offsets(words)[None, :], out=x)
    _mix64(x, tmp[:n].reshape(x.shape))
    return x


def mask_words(rows: MaskRows, site: int, words: int) -> NDArray[np.uint64]:
    """The raw (rows, words) words; for tests and other engines that need the bits themselves."""
    bases = rows.bases(site, words)
    out = np.empty((len(bases), words), np.uint64)
    step = max(1, _BLOCK_WORDS // words)
    for r0 in range(0, len(bases), step):
        out[r0 : r0 + step] = _words(bases[r0 : r0 + step], words)
    return out


def _lanes(x: NDArray[np.uint64], elements: int) -> NDArray[np.uint16]:
    lanes: NDArray[np.uint16] = x.view(np.uint16)[:, :elements]
    return lanes


def keep_mask(out: NDArray[np.bool_], rows: MaskRows, site: int, keep_prob: float) -> None:
    """out[i, e] = whether element e of stacked row i is kept at this site; out is (rows, E)."""
    elements = out.shape[1]
    words = words_per_slot(elements, "bernoulli")
    thr = keep_threshold(keep_prob)
    bases = rows.bases(site, words)
    step = max(1, _BLOCK_WORDS // words)
    for r0 in range(0, len(bases), step):
        r1 = min(len(bases), r0 + step)
        np.less(_lanes(_words(bases[r0:r1], words), elements), thr, out=out[r0:r1])


def _keep_buffer(size: int) -> NDArray[np.bool_]:
    buf: NDArray[np.bool_] | None = getattr(_scratch, "keep", None)
    if buf is None or buf.size < size:
        buf = _scratch.keep = np.empty(size, np.bool_)
    return buf


def apply_keep(h: NDArray[np.float32], rows: MaskRows, site: int, keep_prob: float) -> None:
    """h[i, e] *= keep decision, in place, block by block; h is (rows, E).

    No mask array is ever written: each block's decisions go to a bool scratch that stays in
    L2 and multiply the activation at once (a whole-chunk float mask measured memory-bound).
    """
    elements = h.shape[1]
    words = words_per_slot(elements, "bernoulli")
    thr = keep_threshold(keep_prob)
    bases = rows.bases(site, words)
    step = max(1, _BLOCK_WORDS // words)
    for r0 in range(0, len(bases), step):
        r1 = min(len(bases), r0 + step)
        keep = _keep_buffer((r1 - r0) * elements)[: (r1 - r0) * elements]
        keep = keep.reshape(r1 - r0, elements)
        np.less(_lanes(_words(bases[r0:r1], words), elements), thr, out=keep)
        target = h[r0:r1]
        np.multiply(target, keep, out=target)


def gaussian_noise(
    rows: MaskRows, site: int, elements: int, keep_prob: float
) -> NDArray[np.float32]:
    """Multiplicative N(1, (1-p)/p) noise, (rows, elements); one word per element."""
    words = words_per_slot(elements, "gaussian")
    bases = rows.bases(site, words)
    std = np.sqrt((1.0 - keep_prob) / keep_prob)
    out = np.empty((len(bases), elements), np.float32)
    step = max(1, _BLOCK_WORDS // words)
    for r0 in range(0, len(bases), step):
        r1 = min(len(bases), r0 + step)
        out[r0:r1] = 1.0 + std * _box_muller(_words(bases[r0:r1], words))
    return out


def _box_muller(x: NDArray[np.uint64]) -> NDArray[np.float64]:
    """A standard normal from each word: its high and low 32 bits as two open-interval uniforms."""
    u1 = ((x >> np.uint64(32)).astype(np.float64) + 0.5) / 2.0**32
    u2 = ((x & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 2.0**32
    z: NDArray[np.float64] = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return z

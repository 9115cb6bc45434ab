"""Counter-positioned random streams for dropout masks, in numpy (no torch).

Each (seed, dropout site) pair owns a PCG64DXSM stream. Element k of a site's flattened mask for a
job (rows ordered sample-major: t*N + n, then features) uses 16-bit lane k of that stream, so any
chunk can jump straight to its first element with PCG64DXSM.advance. (PCG64DXSM, numpy's
recommended upgrade of PCG64, has the same jump-ahead and draws words ~1.5x faster here.) That gives the same masks
whether a job runs alone, batched with others, or cut into chunks.

Bernoulli(keep) is `lane < round(keep * 2^16)`: the probability is off by at most 2^-17 (7.6e-6),
and a 64-bit draw yields four mask elements (~0.25 ns each on this CPU, against ~9 ns for
torch.bernoulli).
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

LANE_BITS = 16
LANES_PER_WORD = 64 // LANE_BITS
_LANE_RANGE = 1 << LANE_BITS


def keep_threshold(keep_prob: float) -> int:
    """Integer threshold t with P(lane < t) = t / 2^16 closest to keep_prob."""
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    return round(keep_prob * _LANE_RANGE)


def quantised_keep(keep_prob: float) -> float:
    """The keep probability the integer threshold actually realises."""
    return keep_threshold(keep_prob) / _LANE_RANGE


@functools.lru_cache(maxsize=4096)
def _initial_state(seed: int, site: int) -> Any:
    # Seeding through SeedSequence costs ~35 µs; a request touches each (seed, site) once per
    # chunk, so the seeded state is computed once and copied (~3 µs) afterwards.
    return np.random.PCG64DXSM(np.random.SeedSequence([seed, site])).state


_scratch = threading.local()


def _stream(seed: int, site: int, word_offset: int) -> np.random.PCG64DXSM:
    """The (seed, site) stream advanced by word_offset words (a per-thread generator, reused)."""
    bg: np.random.PCG64DXSM | None = getattr(_scratch, "bg", None)
    if bg is None:
        bg = _scratch.bg = np.random.PCG64DXSM(0)
    bg.state = _initial_state(seed, site)
    if word_offset:
        bg.advance(word_offset)
    return bg


def uniform_lanes(seed: int, site: int, offset: int, count: int) -> NDArray[np.uint16]:
    """Lanes [offset, offset + count) of the (seed, site) stream as uint16."""
    first_word, skip = divmod(offset, LANES_PER_WORD)
    words = -(-(skip + count) // LANES_PER_WORD)
    raw = _stream(seed, site, first_word).random_raw(words)
    lanes: NDArray[np.uint16] = raw.view(np.uint16)[skip : skip + count]
    return lanes


def drop_mask(seed: int, site: int, offset: int, count: int, keep_prob: float) -> NDArray[np.bool_]:
    """True where the element is dropped; each element independently with P = 1 - keep."""
    return uniform_lanes(seed, site, offset, count) >= keep_threshold(keep_prob)


def gaussian_noise(
    seed: int, site: int, offset: int, count: int, keep_prob: float
) -> NDArray[np.float32]:
    """Multiplicative N(1, (1-p)/p) noise; one 64-bit word per element (Box-Muller)."""
    raw = _stream(seed, site, offset).random_raw(count)
    hi = (raw >> np.uint64(32)).astype(np.float64)
    lo = (raw & np.uint64(0xFFFFFFFF)).astype(np.float64)
    u1 = (hi + 0.5) / 2.0**32
    u2 = (lo + 0.5) / 2.0**32
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    std = np.sqrt((1.0 - keep_prob) / keep_prob)
    noise: NDArray[np.float32] = (1.0 + std * z).astype(np.float32)
    return noise


# ---------------------------------------------------------------- filling a pass's masks


@dataclass(frozen=True)
class MaskPiece:
    """Lanes [offset, offset + count) of the (seed, site) stream, written at `dest` onwards."""

    seed: int
    site: int
    offset: int
    count: int
    dest: int


def piece_seed(piece: MaskPiece) -> int:
    """A 63-bit seed for a device generator, keyed by (seed, site, first lane) of a piece."""
    return int(
        np.random.SeedSequence([piece.seed, piece.site, piece.offset]).generate_state(1, np.uint64)[
            0
        ]
        >> np.uint64(1)
    )


# 2^16 words = 2^18 lanes per block: 512 KiB of raw bits, so each block's bits are still in L2
# when they are compared, and no large temporary is allocated.
_BLOCK_WORDS = 1 << 16


def fill_keep(
    out: NDArray[np.bool_] | NDArray[np.float32], pieces: list[MaskPiece], keep_prob: float
) -> None:
    """out[piece.dest : piece.dest + piece.count] = keep decisions of each piece's lanes.

    `out` is bool, or float32 for masks applied by multiplication: torch multiplies float by
    float ~4x faster than float by bool or uint8 (which it converts first), and numpy's bool ->
    float32 copy costs ~0.1 ns per element, so the conversion is cheapest here, block by block.
    """
    thr = keep_threshold(keep_prob)
    as_float = out.dtype != np.bool_
    scratch = np.empty(_BLOCK_WORDS * LANES_PER_WORD if as_float else 0, np.bool_)
    for p in pieces:
        first_word, skip = divmod(p.offset, LANES_PER_WORD)
        bg = _stream(p.seed, p.site, first_word)
        done = 0
        while done < p.count:
            take = min(p.count - done, _BLOCK_WORDS * LANES_PER_WORD - skip)
            raw = bg.random_raw(-(-(skip + take) // LANES_PER_WORD))
            lanes = raw.view(np.uint16)[skip : skip + take]
            dest = out[p.dest + done : p.dest + done + take]
            if as_float:
                np.less(lanes, thr, out=scratch[:take])
                np.copyto(dest, scratch[:take])
            else:
                np.less(lanes, thr, out=dest)
            done += take
            # The next block starts on a word boundary unless this one ended mid-word.
            skip = (skip + take) % LANES_PER_WORD
            if skip:
                bg = _stream(p.seed, p.site, (p.offset + done) // LANES_PER_WORD)


def split_pieces(pieces: list[MaskPiece], parts: int) -> list[list[MaskPiece]]:
    """Cut the pieces into `parts` lists of nearly equal lane counts (streams jump, so any cut works)."""
    total = sum(p.count for p in pieces)
    share = -(-total // max(parts, 1))
    out: list[list[MaskPiece]] = [[]]
    room = share
    for p in pieces:
        offset, count, dest = p.offset, p.count, p.dest
        while count:
            if room == 0:
                out.append([])
                room = share
            take = min(count, room)
            out[-1].append(MaskPiece(p.seed, p.site, offset, take, dest))
            offset, count, dest, room = offset + take, count - take, dest + take, room - take
    return [part for part in out if part]


class MaskFiller:
    """Fills keep masks on `workers` threads: numpy's generators and ufuncs release the GIL.

    Drawing masks is the serial part of an MC pass (torch already spreads the matrix products
    over the cores), so it is split over as many threads as torch uses. The masks do not depend
    on the split, so results are the same for any thread count.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool = (
            ThreadPoolExecutor(self.workers - 1, thread_name_prefix="mcdrop-masks")
            if self.workers > 1
            else None
        )

    def fill(
        self,
        out: NDArray[np.bool_] | NDArray[np.float32],
        pieces: list[MaskPiece],
        keep_prob: float,
    ) -> None:
        if self._pool is None or sum(p.count for p in pieces) < _MIN_PARALLEL_LANES:
            fill_keep(out, pieces, keep_prob)
            return
        parts = split_pieces(pieces, self.workers)
        futures = [self._pool.submit(fill_keep, out, part, keep_prob) for part in parts[1:]]
        fill_keep(out, parts[0], keep_prob)
        for f in futures:
            f.result()


# Below this many lanes (~100 µs of work) a thread hand-off costs more than it saves.
_MIN_PARALLEL_LANES = 1 << 17

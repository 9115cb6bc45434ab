"""Counter-positioned random streams for dropout masks, in numpy (no torch).

Each (seed, dropout site) pair owns a PCG64DXSM stream. Element k of a site's flattened mask for
a job (rows ordered sample-major: t*N + n, then features) uses 16-bit lane k of that stream, so
any chunk can jump straight to its first element with PCG64DXSM.advance. That gives the same
masks whether a job runs alone, batched with others, or cut into chunks. (PCG64DXSM, numpy's
recommended upgrade of PCG64, has the same jump-ahead and draws words ~1.1x faster here.)

Bernoulli(keep) is `lane < round(keep * 2^16)`: the probability is off by at most 2^-17 (7.6e-6),
and a 64-bit draw yields four mask elements (~0.5 ns each on this CPU, against ~9 ns for
torch.bernoulli).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable, Iterator
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
def _initial_state(seed: int, site: int) -> dict[str, Any]:
    # State and increment straight from a keyed hash: ~3 µs, against ~35 µs for SeedSequence,
    # which a batch of freshly seeded requests paid once per (request, site). The increment is
    # odd, as PCG's full period needs; distinct (seed, site) pairs get unrelated streams.
    digest = hashlib.blake2b(f"mcdrop-masks/{seed}/{site}".encode(), digest_size=32).digest()
    return {
        "bit_generator": "PCG64DXSM",
        "state": {
            "state": int.from_bytes(digest[:16], "little"),
            "inc": int.from_bytes(digest[16:], "little") | 1,
        },
        "has_uint32": 0,
        "uinteger": 0,
    }


_scratch = threading.local()


def _stream(seed: int, site: int, word_offset: int) -> np.random.PCG64DXSM:
    """The (seed, site) stream advanced by word_offset words (a per-thread generator, reused)."""
    bg: np.random.PCG64DXSM | None = getattr(_scratch, "bg", None)
    if bg is None:
        bg = _scratch.bg = np.random.PCG64DXSM(0)
    bg.state = _initial_state(seed, site)  # type: ignore[assignment]  # numpy types it as a TypedDict
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


def _lane_blocks(pieces: list[MaskPiece]) -> Iterator[tuple[int, NDArray[np.uint16]]]:
    """(destination index, lanes) for every block of every piece, in order."""
    for p in pieces:
        first_word, skip = divmod(p.offset, LANES_PER_WORD)
        bg = _stream(p.seed, p.site, first_word)
        done = 0
        while done < p.count:
            take = min(p.count - done, _BLOCK_WORDS * LANES_PER_WORD - skip)
            raw = bg.random_raw(-(-(skip + take) // LANES_PER_WORD))
            yield p.dest + done, raw.view(np.uint16)[skip : skip + take]
            done += take
            # The next block starts on a word boundary unless this one ended mid-word.
            skip = (skip + take) % LANES_PER_WORD
            if skip:
                bg = _stream(p.seed, p.site, (p.offset + done) // LANES_PER_WORD)


def fill_keep(out: NDArray[np.bool_], pieces: list[MaskPiece], keep_prob: float) -> None:
    """out[piece.dest : piece.dest + piece.count] = keep decisions of each piece's lanes."""
    thr = keep_threshold(keep_prob)
    for dest, lanes in _lane_blocks(pieces):
        np.less(lanes, thr, out=out[dest : dest + len(lanes)])


def _scratch_buffers() -> tuple[NDArray[np.uint16], NDArray[np.bool_]]:
    """This thread's block-sized lane and decision buffers, allocated once (a fresh 256 KiB
    array is a fresh mapping from the kernel on every call)."""
    bufs: tuple[NDArray[np.uint16], NDArray[np.bool_]] | None = getattr(_scratch, "bufs", None)
    if bufs is None:
        lanes = _BLOCK_WORDS * LANES_PER_WORD
        bufs = _scratch.bufs = (np.empty(lanes, np.uint16), np.empty(lanes, np.bool_))
    return bufs


def apply_keep(h: NDArray[np.float32], pieces: list[MaskPiece], keep_prob: float) -> None:
    """h[piece.dest : piece.dest + piece.count] *= keep decisions, in place, block by block.

    No mask array is ever written: each block's decisions go to a 256 KiB bool scratch that
    stays in L2 and multiply the activation at once. A whole-chunk float mask (4 bytes per
    element) measured memory-bound here: at 32 requests x 100 samples of the reference MLP,
    writing and re-reading it cost more than drawing the bits.

    Small pieces that lie end to end in h (a batch of one-row requests) are packed into one
    block first, so they share one comparison and one multiply instead of paying numpy's call
    overhead each: the masks of 32 one-row `diabetes` jobs (pieces of 1,000, 5,000 and 5,000
    lanes) took 1.0 ms instead of 1.5 with one call per piece.
    """
    thr = keep_threshold(keep_prob)
    lane_buf, keep_buf = _scratch_buffers()
    start, filled = 0, 0  # the packed run: h[start : start + filled] waits in lane_buf

    def flush(dest: int, lanes: NDArray[np.uint16]) -> None:
        keep = keep_buf[: len(lanes)]
        np.less(lanes, thr, out=keep)
        target = h[dest : dest + len(lanes)]
        np.multiply(target, keep, out=target)

    for dest, lanes in _lane_blocks(pieces):
        n = len(lanes)
        if filled and (dest != start + filled or filled + n > len(lane_buf)):
            flush(start, lane_buf[:filled])
            filled = 0
        if n >= _PIECE_COST_LANES:  # large enough to pay its own calls: skip the copy
            flush(dest, lanes)
            continue
        if not filled:
            start = dest
        lane_buf[filled : filled + n] = lanes
        filled += n
    if filled:
        flush(start, lane_buf[:filled])


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

    def fill(self, out: NDArray[np.bool_], pieces: list[MaskPiece], keep_prob: float) -> None:
        """out[dest...] = keep decisions (the onnxruntime engine feeds them to the graph)."""
        self._run(fill_keep, out, pieces, keep_prob)

    def apply(self, h: NDArray[np.float32], pieces: list[MaskPiece], keep_prob: float) -> None:
        """h[dest...] *= keep decisions, in place (the torch engine's CPU path)."""
        self._run(apply_keep, h, pieces, keep_prob)

    def _run(
        self,
        work: Callable[[Any, list[MaskPiece], float], None],
        target: NDArray[Any],
        pieces: list[MaskPiece],
        keep_prob: float,
    ) -> None:
        lanes = sum(p.count for p in pieces)
        # Each piece also costs a few microseconds of Python (seeding its stream, slicing),
        # which holds the GIL and so runs no faster on two threads: a batch of many small
        # requests is drawn on one thread (measured: 32 one-row jobs of `diabetes` took 1.9 ms
        # split over two threads, 1.6 ms on one).
        if (
            self._pool is None
            or lanes < _MIN_PARALLEL_LANES
            or lanes < _PIECE_COST_LANES * len(pieces)
        ):
            work(target, pieces, keep_prob)
            return
        parts = split_pieces(pieces, self.workers)
        futures = [self._pool.submit(work, target, part, keep_prob) for part in parts[1:]]
        work(target, parts[0], keep_prob)
        for f in futures:
            f.result()


# Below this many lanes (~100 µs of work) a thread hand-off costs more than it saves.
_MIN_PARALLEL_LANES = 1 << 17
# A piece costs a few microseconds of Python (seeding its stream, slicing, numpy calls) before
# its lanes; this many lanes is about three times that. Smaller pieces are packed into shared
# blocks (apply_keep), and a split over threads pays only when pieces average at least this.
_PIECE_COST_LANES = 1 << 14

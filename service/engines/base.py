"""The engine contract and the chunk planner every engine shares."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from service.engines.masks import ROW_LIMIT, SAMPLE_SPAN, MaskRows

# A CPU chunk also holds at most this much of its widest activation (or mask), so the mask and
# activation passes re-read it from cache instead of memory (docs/performance.md).
CACHE_CHUNK_BYTES = 4 * 2**20


@dataclass(frozen=True)
class SampleJob:
    """One request's share of a batched pass: its own rows, T and seed.

    Every mask is a pure function of (seed, dropout site, request row, sample index, element)
    (see masks.py), so a job's samples do not depend on which other jobs share the pass, on how
    it is chunked, or on the round that draws them.
    """

    x: NDArray[np.float32]  # (N, *input_shape), already normalised
    samples: int
    seed: int
    # Index of the first sample: a job with first_sample=k draws samples k..k+T-1 of each row,
    # so sampling can continue in rounds (adaptive T).
    first_sample: int = 0
    # Each row's index in the request (default 0..N-1): a round holding only some of a
    # request's rows passes their original indices, so each row keeps its own masks.
    row_ids: NDArray[np.int64] | None = None

    @functools.cached_property
    def rows(self) -> int:  # cached: the batch planner asks for it per job, per site and chunk
        return int(self.x.shape[0])

    @functools.cached_property
    def row_index(self) -> NDArray[np.int64]:
        """Each row's index in the request."""
        if self.row_ids is None:
            return np.arange(self.rows, dtype=np.int64)
        ids = np.asarray(self.row_ids, np.int64)
        if ids.shape != (self.rows,):
            raise ValueError(f"row_ids: expected {self.rows} indices, got shape {ids.shape}")
        return ids


@dataclass(frozen=True)
class Segment:
    """Samples [t0, t1) of job `job`; a chunk is a list of segments run as one pass."""

    job: int
    t0: int
    t1: int


def plan_chunks(jobs: list[tuple[int, int]], max_rows: int) -> list[list[Segment]]:
    """Split jobs given as (rows, samples) into passes of at most max_rows stacked rows.

    Cuts fall between samples, never inside one, so a single sample of a job wider than the
    budget still runs whole (the request row limit bounds that case).
    """
    chunks: list[list[Segment]] = []
    current: list[Segment] = []
    used = 0
    for j, (n, t) in enumerate(jobs):
        t0 = 0
        while t0 < t:
            # max(0, ...): after a forced single sample wider than the budget, `used` exceeds it.
            take = min(t - t0, max(0, max_rows - used) // max(n, 1))
            if take == 0:
                if current:
                    chunks.append(current)
                    current, used = [], 0
                    continue
                take = 1
            current.append(Segment(j, t0, t0 + take))
            used += take * n
            t0 += take
    if current:
        chunks.append(current)
    return chunks


def replication_index(chunk: list[Segment], jobs: list[SampleJob]) -> NDArray[np.int64]:
    """For each stacked row of a chunk, the row of the batch's concatenated inputs it copies.

    Segments are stacked in order, each sample-major: segment (job j, samples t0..t1) takes
    (t1 - t0) × N_j rows, row k of it copying input row first_j + k mod N_j.
    """
    if len(chunk) == 1:  # one request alone: one np.tile instead of the general gather
        s = chunk[0]
        start = sum(j.rows for j in jobs[: s.job])
        tiled: NDArray[np.int64] = np.tile(
            np.arange(start, start + jobs[s.job].rows, dtype=np.int64), s.t1 - s.t0
        )
        return tiled
    first = np.cumsum([0] + [j.rows for j in jobs])
    seg_rows = np.array([jobs[s.job].rows for s in chunk], np.int64)
    seg_len = np.array([(s.t1 - s.t0) * jobs[s.job].rows for s in chunk], np.int64)
    seg_first = first[[s.job for s in chunk]]
    starts = np.cumsum(seg_len) - seg_len
    k = np.arange(int(seg_len.sum()), dtype=np.int64) - np.repeat(starts, seg_len)
    index: NDArray[np.int64] = np.repeat(seg_first, seg_len) + k % np.repeat(seg_rows, seg_len)
    return index


class Engine(Protocol):
    """What the model wrapper needs from an engine."""

    name: str
    device: str

    def sample_many(self, jobs: list[SampleJob]) -> list[NDArray[np.float32]]:
        """Run every job's T passes, batched; return one (T, N, D) array per job."""
        ...

    def deterministic(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Standard dropout: one pass with weights scaled by the keep probability, (N, D)."""
        ...


def chunk_rows(chunk: list[Segment], jobs: list[SampleJob]) -> MaskRows:
    """Which (seed, request row, sample) each stacked row of a chunk draws its masks for, in
    the chunk's order (segments stacked, each sample-major); every site's mask follows from it.
    """
    if len(chunk) == 1:  # one request alone: the common case, without the general bookkeeping
        s = chunk[0]
        job = jobs[s.job]
        ids = job.row_index
        samples = np.arange(job.first_sample + s.t0, job.first_sample + s.t1, dtype=np.int64)
        slots = np.add.outer(samples, ids * SAMPLE_SPAN).ravel()
        rows = MaskRows((job.seed,), np.zeros(slots.shape, np.intp), slots.astype(np.uint64))
    else:
        ids = np.concatenate([j.row_index for j in jobs])
        index = replication_index(chunk, jobs)
        seg_rows = np.array([jobs[s.job].rows for s in chunk], np.int64)
        seg_len = np.array([(s.t1 - s.t0) * jobs[s.job].rows for s in chunk], np.int64)
        first = np.array([jobs[s.job].first_sample + s.t0 for s in chunk], np.int64)
        starts = np.cumsum(seg_len) - seg_len
        k = np.arange(int(seg_len.sum()), dtype=np.int64) - np.repeat(starts, seg_len)
        samples = np.repeat(first, seg_len) + k // np.repeat(seg_rows, seg_len)
        slots = ids[index] * SAMPLE_SPAN + samples
        seed_index = np.repeat(np.array([s.job for s in chunk], np.intp), seg_len)
        rows = MaskRows(tuple(j.seed for j in jobs), seed_index, slots.astype(np.uint64))
    if ids.size and (ids.min() < 0 or ids.max() >= ROW_LIMIT or samples.max() >= SAMPLE_SPAN):
        raise ValueError(f"masks address rows 0..{ROW_LIMIT - 1} and samples below {SAMPLE_SPAN}")
    return rows

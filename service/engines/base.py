"""The engine contract and the chunk planner every engine shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class SampleJob:
    """One request's share of a batched pass: its own rows, T and seed.

    Masks are drawn from a stream keyed by (seed, dropout site), positioned by sample index, so a
    job's samples do not depend on which other jobs share the pass or on how it is chunked.
    """

    x: NDArray[np.float32]  # (N, *input_shape), already normalised
    samples: int
    seed: int
    # Index of the first sample in the seed's streams: a job with first_sample=k draws samples
    # k..k+T-1 of the same sequence, so sampling can continue in rounds (adaptive T).
    first_sample: int = 0

    @property
    def rows(self) -> int:
        return int(self.x.shape[0])


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
            # max(..., 0): after a lone sample wider than the budget, `used` exceeds max_rows,
            # and a negative take would walk t0 backwards forever.
            take = min(t - t0, max(max_rows - used, 0) // max(n, 1))
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

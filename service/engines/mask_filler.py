"""Keep masks drawn on several threads: numpy's ufuncs release the GIL."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.engines.masks import MaskRows, apply_keep, keep_mask

# Below this many lanes a thread hand-off costs more than it saves.
_MIN_PARALLEL_LANES = 1 << 17


class MaskFiller:
    """Fills keep masks on `workers` threads: numpy's ufuncs release the GIL.

    Drawing masks is the serial part of an MC pass (torch already spreads the matrix products
    over the cores), so the stacked rows are split over as many threads as torch uses. Masks
    are a pure function of each row's slot, so results are the same for any thread count.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool = (
            ThreadPoolExecutor(self.workers - 1, thread_name_prefix="mcdrop-masks")
            if self.workers > 1
            else None
        )

    def fill(self, out: NDArray[np.bool_], rows: MaskRows, site: int, keep_prob: float) -> None:
        """out (rows, E) = keep decisions (the onnxruntime engine feeds them to the graph)."""
        self._run(keep_mask, out, rows, site, keep_prob)

    def apply(self, h: NDArray[np.float32], rows: MaskRows, site: int, keep_prob: float) -> None:
        """h (rows, E) *= keep decisions, in place (the torch engine's CPU path)."""
        self._run(apply_keep, h, rows, site, keep_prob)

    def _run(
        self,
        work: Callable[[Any, MaskRows, int, float], None],
        target: NDArray[Any],
        rows: MaskRows,
        site: int,
        keep_prob: float,
    ) -> None:
        n = len(rows)
        if self._pool is None or target.size < _MIN_PARALLEL_LANES or n < 2:
            work(target, rows, site, keep_prob)
            return
        parts = min(self.workers, n)
        cuts = [n * k // parts for k in range(parts + 1)]
        futures = [
            self._pool.submit(work, target[a:b], rows.part(a, b), site, keep_prob)
            for a, b in itertools.pairwise(cuts[1:])
        ]
        work(target[: cuts[1]], rows.part(0, cuts[1]), site, keep_prob)
        for f in futures:
            f.result()

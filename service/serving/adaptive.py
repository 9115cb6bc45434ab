"""`samples: "auto"`: draw MC samples in rounds and stop each row once its decision is settled.

`AdaptiveRun` is the bookkeeping (which rows are open, how many samples each has), free of I/O
so tests can drive it with synthetic samplers. `sample_adaptive` drives it with the runner
(the Predictor checks the request's limits and admits it first):
each round is one SampleJob holding only the open rows, with their indices in the request and
`first_sample` set to the samples already drawn, so round k's samples of a row are exactly
samples k.. of a fixed run with the same seed (masks depend on row and sample index only), and
the open rows of a request keep sampling together in one pass (batched with other requests).
The interval maths lives in service.maths.sequential.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.maths import sequential, uncertainty
from service.serving.model import MCDropoutModel
from service.serving.results import AdaptiveStats, Prediction

# interval_of(samples (T, n, D), alpha) -> Interval for those n rows
IntervalFn = Callable[[NDArray[np.float32], float], sequential.Interval]
# sample(model, job) -> the job's (count, rows, D) samples: the runner's, or a test's
SampleFn = Callable[[MCDropoutModel, SampleJob], Awaitable[NDArray[np.float32]]]


@dataclass(frozen=True)
class Round:
    """Draw samples [first, first + count) for these rows."""

    rows: NDArray[np.intp]
    first: int
    count: int


class AdaptiveRun:
    """Rounds of doubling totals; a row leaves once its interval clears the threshold."""

    def __init__(
        self,
        n_rows: int,
        outputs: int,
        max_samples: int,
        threshold: float,
        confidence: float,
        interval_of: IntervalFn,
        first_round: int = sequential.FIRST_ROUND,
    ) -> None:
        self.totals = sequential.schedule(max_samples, first_round)
        self.alpha = sequential.look_alpha(confidence, len(self.totals) - 1)
        self.threshold = threshold
        self.interval_of = interval_of
        self.buffer = np.empty((max_samples, n_rows, outputs), np.float32)
        self.used = np.zeros(n_rows, np.int64)
        self.open = np.ones(n_rows, bool)
        self.settled = np.zeros(n_rows, bool)
        self._round = 0

    def next_round(self) -> Round | None:
        if not self.open.any():
            return None
        done = self.totals[self._round - 1] if self._round else 0
        return Round(np.flatnonzero(self.open), done, self.totals[self._round] - done)

    def record(self, plan: Round, samples: NDArray[np.float32]) -> None:
        """Store the round's (count, rows, D) samples and close the rows that are done."""
        total = plan.first + plan.count
        self.buffer[plan.first : total, plan.rows] = samples
        self.used[plan.rows] = total
        self._round += 1
        if total >= self.totals[-1]:
            self.open[plan.rows] = False  # the cap: stop, settled or not
            return
        done = self.interval_of(self.buffer[:total, plan.rows], self.alpha).settled(self.threshold)
        self.open[plan.rows[done]] = False
        self.settled[plan.rows[done]] = True

    def groups(self) -> list[tuple[int, NDArray[np.intp]]]:
        """(samples used, rows) for each distinct count, for summarising rows together."""
        return [(int(t), np.flatnonzero(self.used == t)) for t in np.unique(self.used)]


def interval_fn(model: MCDropoutModel, metric: str) -> IntervalFn:
    """The model's raw engine outputs → interval of its uncertainty, in the response's units."""
    if model.task == "regression":
        tau = model.manifest.tau
        assert tau is not None

        def reg(raw: NDArray[np.float32], alpha: float) -> sequential.Interval:
            return sequential.regression_interval(model.to_target_units(raw), tau, metric, alpha)

        return reg

    def clf(raw: NDArray[np.float32], alpha: float) -> sequential.Interval:
        return sequential.classification_interval(uncertainty.softmax(raw, axis=2), metric, alpha)

    return clf


@dataclass(frozen=True)
class AdaptiveSpec:
    """One adaptive request's settings, resolved and checked by the Predictor."""

    max_samples: int
    seed: int
    threshold: float
    metric: str
    confidence: float


async def sample_adaptive(
    model: MCDropoutModel, x: NDArray[np.float32], spec: AdaptiveSpec, sample: SampleFn
) -> Prediction:
    """Rounds of samples for the open rows of `x` (prepared), then the merged result."""
    outputs = model.manifest.architecture.output_dim
    run = AdaptiveRun(
        x.shape[0],
        outputs,
        spec.max_samples,
        spec.threshold,
        spec.confidence,
        interval_fn(model, spec.metric),
    )
    while (plan := run.next_round()) is not None:
        job = SampleJob(
            x[plan.rows], plan.count, spec.seed, first_sample=plan.first, row_ids=plan.rows
        )
        samples = await sample(model, job)
        await asyncio.to_thread(run.record, plan, samples)
    return await asyncio.to_thread(_merge, model, run, spec)


def _merge(model: MCDropoutModel, run: AdaptiveRun, spec: AdaptiveSpec) -> Prediction:
    """Summarise each group of rows that used the same T, then put the rows back in order."""
    n = run.used.shape[0]
    full: dict[str, Any] = {}
    mean_se = np.zeros((n, run.buffer.shape[2]))
    unc_se = np.zeros(n)
    part: Prediction | None = None
    for t, rows in run.groups():
        raw = run.buffer[:t, rows]
        with np.errstate(all="ignore"):
            part = model.summarize(raw, spec.seed, spec.threshold, spec.metric)
            unc_se[rows] = run.interval_of(raw, run.alpha).se
            units = model.to_target_units(raw) if model.task == "regression" else None
            mean_se[rows] = sequential.mean_se(
                units if units is not None else uncertainty.softmax(raw, axis=2)
            )
        for name, value in part.outputs().items():
            if name not in full:
                full[name] = np.zeros((n, *value.shape[1:]), value.dtype)
            full[name][rows] = value
    assert part is not None  # a request has at least one row, so one group
    stats = AdaptiveStats(
        max_samples=run.totals[-1],
        confidence=spec.confidence,
        samples_used=run.used.copy(),
        mean_se=mean_se,
        uncertainty_se=unc_se,
        decision_settled=run.settled.copy(),
    )
    return replace(part, samples=int(run.used.max()), adaptive=stats, **full)

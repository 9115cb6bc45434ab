"""`samples: "auto"`: draw MC samples in rounds and stop each row once its decision is settled.

`AdaptiveRun` is the bookkeeping (which rows are open, how many samples each has), free of I/O
so tests can drive it with synthetic samplers. `predict_adaptive` drives it with the runner:
each round is one SampleJob holding only the open rows, with their indices in the request and
`first_sample` set to the samples already drawn, so round k's samples of a row are exactly
samples k.. of a fixed run with the same seed (masks depend on row and sample index only), and
the open rows of a request keep sampling together in one pass (batched with other requests).
The interval maths lives in service.maths.sequential.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.errors import InvalidInput
from service.maths import sequential, uncertainty
from service.serving.finite import abstain_non_finite
from service.serving.model import MCDropoutModel, Prediction, draw_seed
from service.serving.predictor import Predictor, PredictParams

# interval_of(samples (T, n, D), alpha) -> Interval for those n rows
IntervalFn = Callable[[NDArray[np.float32], float], sequential.Interval]


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


@dataclass
class AdaptivePrediction:
    """The merged prediction (its `samples` is the largest T used) and the per-row extras."""

    prediction: Prediction
    max_samples: int
    confidence: float
    samples_used: NDArray[np.int64]  # (N,)
    mean_se: NDArray[np.float64]  # (N, D): MC standard error of the mean
    uncertainty_se: NDArray[np.float64]  # (N,): MC standard error of the uncertainty value
    decision_settled: NDArray[np.bool_]  # (N,): stopped early because the interval cleared


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


async def predict_adaptive(
    predictor: Predictor,
    model: MCDropoutModel,
    inputs: Any,
    *,
    seed: int | None,
    threshold: float | None,
    metric: str | None,
    max_samples: int | None,
    confidence: float | None,
    timeout_ms: int | None = None,
    refer: bool = True,
    request_id: str = "",
) -> AdaptivePrediction:
    """Adaptive T for one request; `predictor` is the app's Predictor (limits and runner)."""
    limits = predictor.limits
    n = len(inputs) if isinstance(inputs, list) else 0
    if n > limits.max_rows:
        raise _invalid("inputs", f"at most {limits.max_rows} rows per request, got {n}")
    cap = predictor.max_samples(model)
    t_max = predictor.default_samples(model) if max_samples is None else max_samples
    if not 2 <= t_max <= cap:
        raise _invalid("max_samples", f"expected an integer in [2, {cap}], got {t_max}")
    conf = sequential.DEFAULT_CONFIDENCE if confidence is None else confidence
    m = model.resolve_metric(metric)
    if t_max * n > limits.max_sample_rows:
        raise _invalid(
            "max_samples",
            f"max_samples × rows = {t_max} × {n} is over the limit of {limits.max_sample_rows} "
            "per request; lower max_samples or send fewer rows",
        )
    x = model.prepare(inputs)
    s = draw_seed() if seed is None else seed
    thr = model.manifest.threshold if threshold is None else float(threshold)
    outputs = model.manifest.architecture.output_dim
    run = AdaptiveRun(x.shape[0], outputs, t_max, thr, conf, interval_fn(model, m))
    # Admitted at its worst case, max_samples x rows, for the whole run of rounds.
    async with predictor.admitted(t_max * n, timeout_ms):
        while (plan := run.next_round()) is not None:
            job = SampleJob(x[plan.rows], plan.count, s, first_sample=plan.first, row_ids=plan.rows)
            samples = await predictor.runner.sample(model, job)
            await asyncio.to_thread(run.record, plan, samples)
        out = await asyncio.to_thread(_merge, model, run, s, thr, m, conf)
    abstain_non_finite(out.prediction)
    params = PredictParams(seed=s, threshold=thr, metric=m, refer=refer, request_id=request_id)
    await predictor.finish(model, inputs, out.prediction, params)
    return out


def _merge(
    model: MCDropoutModel, run: AdaptiveRun, seed: int, thr: float, metric: str, conf: float
) -> AdaptivePrediction:
    """Summarise each group of rows that used the same T, then put the rows back in order."""
    n = run.used.shape[0]
    full: dict[str, Any] = {}
    mean_se = np.zeros((n, run.buffer.shape[2]))
    unc_se = np.zeros(n)
    interval_of = run.interval_of
    for t, rows in run.groups():
        raw = run.buffer[:t, rows]
        with np.errstate(all="ignore"):
            part = model.summarize(raw, seed, thr, metric)
            iv = interval_of(raw, run.alpha)
            units = model.to_target_units(raw) if model.task == "regression" else None
            mean_se[rows] = sequential.mean_se(
                units if units is not None else uncertainty.softmax(raw, axis=2)
            )
        unc_se[rows] = iv.se
        for f in fields(part):
            value = getattr(part, f.name)
            if isinstance(value, np.ndarray):
                if f.name not in full:
                    full[f.name] = np.zeros((n, *value.shape[1:]), value.dtype)
                full[f.name][rows] = value
    pred = Prediction(
        task=model.task,
        samples=int(run.used.max()),
        seed=seed,
        metric=metric,
        threshold=thr,
        **full,
    )
    return AdaptivePrediction(
        prediction=pred,
        max_samples=run.totals[-1],
        confidence=conf,
        samples_used=run.used.copy(),
        mean_se=mean_se,
        uncertainty_se=unc_se,
        decision_settled=run.settled.copy(),
    )


def _invalid(field: str, msg: str) -> InvalidInput:
    return InvalidInput(f"{field}: {msg}", [{"loc": [field], "msg": msg, "type": "value_error"}])

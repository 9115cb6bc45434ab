"""The one data plane: `Predictor.infer(name, rows, params)` answers a request, whatever protocol
brought it.

It checks the request's limits, admits it (bound and deadline), draws the MC samples through the
runner (fixed T, or rounds for `samples: "auto"`), summarises them into a typed result, answers
overflowed rows, feeds the calibration watch, refers abstained rows and counts the prediction
in the metrics. Routes only translate a protocol (REST v1, V2) to and from it, so every entry
point enforces the same limits and does the same bookkeeping.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.errors import InvalidInput
from service.maths import sequential
from service.serving.adaptive import AdaptiveSpec, sample_adaptive
from service.serving.admission import AdmissionController
from service.serving.finite import abstain_non_finite
from service.serving.hooks import PredictionObserver, ReferralSink, Rows
from service.serving.model import MCDropoutModel, draw_seed
from service.serving.registry import ModelRegistry
from service.serving.results import Prediction
from service.serving.runner import Runner
from service.serving.watch import CalibrationWatches

# Up to this many T×N×D samples a summary is computed on the event loop; larger ones go to a
# thread. For small requests the thread round trip costs the loop more than the maths itself.
INLINE_SUMMARY_VALUES = 10_000


@dataclass(frozen=True)
class Limits:
    """Per-request bounds (see service.config.Settings for their meaning)."""

    max_rows: int = 1024
    max_samples: int = 10_000
    max_sample_rows: int = 2_000_000
    max_returned_values: int = 100_000


@dataclass(frozen=True)
class PredictParams:
    """A request's options; None means the model's default."""

    samples: int | Literal["auto"] | None = None
    seed: int | None = None
    threshold: float | None = None
    metric: str | None = None
    return_samples: bool = False
    refer: bool = True  # record abstained rows in the referral store
    request_id: str = ""
    timeout_ms: int | None = None  # lowers the server's deadline for this request
    max_samples: int | None = None  # samples "auto": the most samples a row may use
    confidence: float | None = None  # samples "auto": of a row's early decision


@dataclass(frozen=True)
class Inference:
    """A request's answer and the model version that gave it (a reload may replace it since)."""

    name: str
    model: MCDropoutModel
    result: Prediction


def _invalid(field: str, msg: str) -> InvalidInput:
    return InvalidInput(f"{field}: {msg}", [{"loc": [field], "msg": msg, "type": "value_error"}])


def _row_count(rows: Rows) -> int:
    if isinstance(rows, list):
        return len(rows)
    return int(rows.shape[0]) if rows.ndim else 0


class Predictor:
    """Ties the registry, the runner, the limits and the bookkeeping together; one per app."""

    def __init__(
        self,
        registry: ModelRegistry,
        runner: Runner,
        limits: Limits,
        referrals: ReferralSink | None = None,
        admission: AdmissionController | None = None,
        watches: CalibrationWatches | None = None,
        observer: PredictionObserver | None = None,
    ) -> None:
        self.registry = registry
        self.runner = runner
        self.limits = limits
        self.referrals = referrals
        self.admission = admission  # None: no bound and no deadline (library use, tests)
        self.watches = watches  # None: no calibration watch
        self.observer = observer  # None: no metrics

    def admitted(self, cost: int, timeout_ms: int | None) -> AbstractAsyncContextManager[None]:
        if self.admission is None:
            return nullcontext()
        return self.admission.admitted(cost, self.admission.deadline_for(timeout_ms))

    def max_samples(self, model: MCDropoutModel) -> int:
        return min(model.manifest.max_samples, self.limits.max_samples)

    def default_samples(self, model: MCDropoutModel) -> int:
        return min(model.manifest.default_samples, self.max_samples(model))

    def model(self, name: str | None) -> MCDropoutModel:
        return self.registry.get(name)

    async def infer(self, name: str | None, rows: Rows, params: PredictParams) -> Inference:
        """Answer one request for the named model (None: the server's default)."""
        resolved = name if name is not None else self.registry.default_name
        model = self.model(resolved)
        label = resolved if resolved is not None else model.folder.name
        if params.samples == "auto":
            result = await self._adaptive(model, rows, params)
        else:
            result = await self._fixed(model, rows, params.samples, params)
        result = await self._finish(label, model, rows, abstain_non_finite(result), params)
        return Inference(label, model, result)

    async def _fixed(
        self, model: MCDropoutModel, rows: Rows, samples: int | None, params: PredictParams
    ) -> Prediction:
        n = _row_count(rows)
        t = self._checked_samples(model, n, samples, "samples", params)
        x = model.prepare(rows)
        seed = draw_seed() if params.seed is None else params.seed
        async with self.admitted(t * n, params.timeout_ms):
            raw = await self.runner.sample(model, SampleJob(x, t, seed))
            if raw.size <= INLINE_SUMMARY_VALUES:
                # Small: cheaper on the loop than a round trip through a thread.
                return _summarize(model, raw, seed, params)
            # The maths over T×N×D values can take a while for large requests: keep it off
            # the loop, so other requests' replies are not held up behind it.
            return await asyncio.to_thread(_summarize, model, raw, seed, params)

    async def _adaptive(
        self, model: MCDropoutModel, rows: Rows, params: PredictParams
    ) -> Prediction:
        n = _row_count(rows)
        t_max = self._checked_samples(model, n, params.max_samples, "max_samples", params)
        x = model.prepare(rows)
        confidence = params.confidence
        spec = AdaptiveSpec(
            max_samples=t_max,
            seed=draw_seed() if params.seed is None else params.seed,
            threshold=model.manifest.threshold if params.threshold is None else params.threshold,
            metric=model.resolve_metric(params.metric),
            confidence=sequential.DEFAULT_CONFIDENCE if confidence is None else confidence,
        )
        # Admitted at its worst case, max_samples x rows, for the whole run of rounds.
        async with self.admitted(t_max * n, params.timeout_ms):
            return await sample_adaptive(model, x, spec, self.runner.sample)

    def _checked_samples(
        self, model: MCDropoutModel, n: int, samples: int | None, field: str, params: PredictParams
    ) -> int:
        """The request's T (samples "auto": its most per row), once every limit is checked.

        `field` names the option that sets T in errors: samples, or max_samples with "auto"."""
        limits = self.limits
        if n > limits.max_rows:
            raise _invalid("inputs", f"at most {limits.max_rows} rows per request, got {n}")
        cap = self.max_samples(model)
        if samples is not None and not 2 <= samples <= cap:
            raise _invalid(field, f"expected an integer in [2, {cap}], got {samples}")
        t = model.resolve_samples(self.default_samples(model) if samples is None else samples)
        model.resolve_metric(params.metric)  # refuse a bad metric before any work
        if t * n > limits.max_sample_rows:
            raise _invalid(
                field,
                f"{field} × rows = {t} × {n} is over the limit of {limits.max_sample_rows} "
                f"per request; lower {field} or send fewer rows",
            )
        outputs = model.manifest.architecture.output_dim
        if params.return_samples and t * n * outputs > limits.max_returned_values:
            raise _invalid(
                "return_samples",
                f"samples × rows × outputs = {t * n * outputs} values is over the limit of "
                f"{limits.max_returned_values}; lower samples or send fewer rows",
            )
        return t

    async def _finish(
        self, name: str, model: MCDropoutModel, rows: Rows, pred: Prediction, params: PredictParams
    ) -> Prediction:
        """Feed the calibration watch, queue the abstained rows for a person, count it."""
        if self.watches is not None:
            self.watches.observe(name, model, pred)
        if self.referrals is not None and params.refer and pred.abstain.any():
            # Never raises, and never waits past its write timeout (see the recorder).
            ids = await self.referrals.record(name, model, rows, pred, params.request_id)
            pred = replace(pred, referral_ids=ids)
        if self.observer is not None:
            self.observer.observe_prediction(name, pred)
        return pred


def _summarize(
    model: MCDropoutModel, raw: NDArray[np.float32], seed: int, params: PredictParams
) -> Prediction:
    # Samples that overflowed make numpy warn (inf - inf); abstain_non_finite answers those rows.
    with np.errstate(all="ignore"):
        return model.summarize(raw, seed, params.threshold, params.metric, params.return_samples)


__all__ = ["INLINE_SUMMARY_VALUES", "Inference", "Limits", "PredictParams", "Predictor"]

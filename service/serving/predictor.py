"""The predict flow: raw rows → validated array → MC samples (via the runner) → decisions.

Request limits live here, not in the HTTP layer, so every entry point enforces the same ones.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from service.engines.base import SampleJob
from service.errors import InvalidInput
from service.serving.admission import AdmissionController
from service.serving.finite import abstain_non_finite
from service.serving.model import MCDropoutModel, Prediction, draw_seed
from service.serving.registry import ModelRegistry
from service.serving.runner import Runner

if TYPE_CHECKING:
    from service.referrals.recorder import ReferralRecorder
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

    samples: int | None = None
    seed: int | None = None
    threshold: float | None = None
    metric: str | None = None
    return_samples: bool = False
    refer: bool = True  # record abstained rows in the referral store
    request_id: str = ""
    timeout_ms: int | None = None  # lowers the server's deadline for this request


def _invalid(field: str, msg: str) -> InvalidInput:
    return InvalidInput(f"{field}: {msg}", [{"loc": [field], "msg": msg, "type": "value_error"}])


class Predictor:
    """Ties the registry, the runner and the limits together; one per app."""

    def __init__(
        self,
        registry: ModelRegistry,
        runner: Runner,
        limits: Limits,
        referrals: ReferralRecorder | None = None,
        admission: AdmissionController | None = None,
        watches: CalibrationWatches | None = None,
    ) -> None:
        self.registry = registry
        self.runner = runner
        self.limits = limits
        self.referrals = referrals
        self.admission = admission  # None: no bound and no deadline (library use, tests)
        self.watches = watches  # None: no calibration watch

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

    async def predict(
        self, model: MCDropoutModel, inputs: Any, params: PredictParams
    ) -> Prediction:
        n = len(inputs) if isinstance(inputs, list) else 0
        if n > self.limits.max_rows:
            raise _invalid("inputs", f"at most {self.limits.max_rows} rows per request, got {n}")
        t = self._samples(model, params.samples)
        model.resolve_metric(params.metric)  # refuse a bad metric before any work
        if t * n > self.limits.max_sample_rows:
            raise _invalid(
                "samples",
                f"samples × rows = {t} × {n} is over the limit of {self.limits.max_sample_rows} "
                "per request; lower samples or send fewer rows",
            )
        outputs = model.manifest.architecture.output_dim
        if params.return_samples and t * n * outputs > self.limits.max_returned_values:
            raise _invalid(
                "return_samples",
                f"samples × rows × outputs = {t * n * outputs} values is over the limit of "
                f"{self.limits.max_returned_values}; lower samples or send fewer rows",
            )
        x = model.prepare(inputs)
        seed = draw_seed() if params.seed is None else params.seed
        async with self.admitted(t * n, params.timeout_ms):
            raw = await self.runner.sample(model, SampleJob(x, t, seed))
            if raw.size <= INLINE_SUMMARY_VALUES:
                # Tens of microseconds: cheaper on the loop than a round trip through a thread.
                pred = _summarize(model, raw, seed, params)
            else:
                # The maths over T×N×D values can take a while for large requests: keep it off
                # the loop, so other requests' replies are not held up behind it.
                pred = await asyncio.to_thread(_summarize, model, raw, seed, params)
        return await self.finish(model, inputs, abstain_non_finite(pred), params)

    async def finish(
        self, model: MCDropoutModel, inputs: Any, pred: Prediction, params: PredictParams
    ) -> Prediction:
        """Last step of every prediction path: feed the calibration watch, queue the abstained
        rows for a person."""
        if self.watches is not None:
            self.watches.observe(model.folder.name, model, pred)
        if self.referrals is not None and params.refer and pred.abstain.any():
            # Never raises, and never waits past its write timeout (see ReferralRecorder).
            pred.referral_ids = await self.referrals.record(
                model.folder.name, model, inputs, pred, params.request_id
            )
        return pred

    def _samples(self, model: MCDropoutModel, samples: int | None) -> int:
        cap = self.max_samples(model)
        if samples is None:
            return model.resolve_samples(self.default_samples(model))
        if not 2 <= samples <= cap:
            raise _invalid("samples", f"expected an integer in [2, {cap}], got {samples}")
        return model.resolve_samples(samples)


def _summarize(
    model: MCDropoutModel, raw: NDArray[np.float32], seed: int, params: PredictParams
) -> Prediction:
    # Samples that overflowed make numpy warn (inf - inf); abstain_non_finite answers those rows.
    with np.errstate(all="ignore"):
        return model.summarize(raw, seed, params.threshold, params.metric, params.return_samples)

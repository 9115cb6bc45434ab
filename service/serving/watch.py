"""The calibration watch: per model, is live uncertainty still exchangeable with the reference?

Every answered prediction feeds the model's test (service/maths/exchangeability.py) with *one* row,
picked at random by the watch's own generator. Rows of one request are not independent draws
(a client sends a batch from one scanner, one clinic, one series), and feeding them all would
treat correlated rows as independent evidence: a single unusual batch of near-duplicates could
then raise a false alarm. A uniformly chosen row of a request drawn from the calibration
distribution is itself distributed as one held-out row, and requests are independent of each
other, so the tested sequence is exchangeable with the reference exactly when the traffic is.
The price is power per row: a request of N rows counts as one observation.

Requests drawn with another T than the calibration's, or scored by another measure (a regression
request naming its own metric), give scores of another distribution; they are counted as
skipped, not tested.

State lives in memory, keyed by model name and (version, reference SHA-256): a hot reload that
keeps both keeps the test running; a new version or a recalibration (new reference scores)
starts a fresh one. A restart of the process starts fresh too.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.artifacts.reference import ReferenceScores
from service.maths.exchangeability import ExchangeabilityTest, WatchSnapshot
from service.serving.model import MCDropoutModel, Prediction
from service.serving.registry import ModelRegistry

log = logging.getLogger("mcdrop.watch")

EventSink = Callable[[dict[str, Any]], None]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class ModelWatch:
    """One model version's running test."""

    name: str
    version: str
    reference: ReferenceScores
    test: ExchangeabilityTest
    started_at: str = field(default_factory=_now)
    rows_seen: int = 0  # rows of the requests tested (one row of each is fed to the test)
    requests_skipped: int = 0
    shifted_at: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.version, self.reference.sha256)


@dataclass(frozen=True)
class WatchView:
    """A model's watch as the API shows it: a snapshot, or why there is none."""

    status: str  # holding, shifted, unavailable, off
    reason: str | None = None
    watch: ModelWatch | None = None
    snapshot: WatchSnapshot | None = None


class CalibrationWatches:
    """Every model's watch; fed from the prediction path, read by the API and /metrics."""

    def __init__(
        self,
        registry: ModelRegistry,
        alpha: float = 0.01,
        window: int = 500,
        enabled: bool = True,
        notify: EventSink | None = None,
        seed: int | None = None,
    ) -> None:
        self.registry = registry
        self.alpha = alpha
        self.window = window
        self.enabled = enabled
        self.notify = notify
        self._rng = random.Random(seed)
        self._watches: dict[str, ModelWatch] = {}

    # ------------------------------------------------------------------ the prediction path

    def observe(self, name: str, model: MCDropoutModel, pred: Prediction) -> None:
        """Feed one random row of an answered request to the model's test; never raises."""
        n = int(pred.uncertainty.shape[0])
        if not self.enabled or n == 0:
            return
        watch = self._watch_for(name, model)
        if watch is None:
            return
        ref = watch.reference
        scores: NDArray[np.float64] | None = pred.uncertainty
        if pred.metric != ref.metric:
            scores = getattr(pred, ref.metric, None) if pred.task == "classification" else None
        if pred.samples != ref.samples or scores is None:
            watch.requests_skipped += 1
            return
        watch.rows_seen += n
        score = float(scores[self._rng.randrange(n)])
        if watch.test.observe(score):
            self._raise_alarm(watch)

    def _watch_for(self, name: str, model: MCDropoutModel) -> ModelWatch | None:
        watch = self._watches.get(name)
        entry = self.registry.entries.get(name)
        if entry is None or entry.model is not model or entry.reference is None:
            return None  # no reference, or a request finishing on a model a reload replaced
        ref = entry.reference
        if watch is not None and watch.key == (model.manifest.version, ref.sha256):
            return watch
        if watch is not None:
            log.info(
                "calibration watch of '%s' restarted: new version or new reference "
                "(version %s, reference %s…)",
                name,
                model.manifest.version,
                ref.sha256[:12],
            )
        return self._start(name, model.manifest.version, ref)

    def _start(self, name: str, version: str, ref: ReferenceScores) -> ModelWatch:
        test = ExchangeabilityTest(
            ref.scores,
            ref.threshold,
            ref.referral_rate,
            self.alpha,
            self.window,
            seed=self._rng.getrandbits(64),
        )
        watch = self._watches[name] = ModelWatch(name, version, ref, test)
        return watch

    def _raise_alarm(self, watch: ModelWatch) -> None:
        watch.shifted_at = _now()
        snap = watch.test.snapshot()
        log.warning(
            "calibration watch: model '%s' version %s has SHIFTED: martingale %.4g >= 1/alpha = "
            "%.4g after %d tested requests (%d rows); its calibrated threshold's guarantee no "
            "longer holds. Recalibrate, then POST /v1/admin/models/%s/watch/reset",
            watch.name,
            watch.version,
            snap.martingale,
            snap.alarm_level,
            snap.tested,
            watch.rows_seen,
            watch.name,
        )
        if self.notify is not None:
            try:
                self.notify(shift_event(watch, snap))
            except Exception:  # a notification never fails a prediction
                log.exception("calibration watch: could not queue the webhook event")

    # ------------------------------------------------------------------ operators

    def view(self, name: str) -> WatchView:
        """The watch of a model the registry knows (ready or not)."""
        if not self.enabled:
            return WatchView("off", "the calibration watch is off (MCDROP_CALIBRATION_WATCH)")
        entry = self.registry.entries.get(name)
        if entry is None or entry.model is None:
            return WatchView("unavailable", "the model is not ready")
        if entry.reference is None:
            return WatchView(
                "unavailable",
                entry.reference_error
                or "no reference scores: run `mcdrop calibrate` to store them beside the weights",
            )
        watch = self._watch_for(name, entry.model)
        assert watch is not None
        snap = watch.test.snapshot()
        return WatchView(snap.status, None, watch, snap)

    def reset(self, name: str) -> WatchView:
        """Start the model's test afresh (after recalibrating, or to acknowledge an alarm)."""
        entry = self.registry.entries.get(name)
        if entry is not None and entry.model is not None and entry.reference is not None:
            old = self._watches.get(name)
            self._start(name, entry.model.manifest.version, entry.reference)
            log.info(
                "calibration watch of '%s' reset by an operator (was %s)",
                name,
                "shifted" if old is not None and old.test.shifted else "holding",
            )
        return self.view(name)

    def names(self) -> list[str]:
        return sorted(self.registry.entries)


def shift_event(watch: ModelWatch, snap: WatchSnapshot) -> dict[str, Any]:
    """The webhook body sent once when a model's watch turns shifted."""
    rate = snap.window_referral_rate
    return {
        "event": "calibration_watch.shifted",
        "model": watch.name,
        "model_version": watch.version,
        "url": f"/v1/models/{watch.name}",
        "shifted_at": watch.shifted_at,
        "martingale": snap.martingale,
        "alarm_level": snap.alarm_level,
        "alpha": snap.alpha,
        "requests_tested": snap.tested,
        "rows_seen": watch.rows_seen,
        "window_referral_rate": None if rate is None or math.isnan(rate) else rate,
        "calibrated_referral_rate": snap.calibrated_referral_rate,
        "metric": watch.reference.metric,
        "threshold": watch.reference.threshold,
    }

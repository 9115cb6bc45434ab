"""What the Predictor needs of the layers above it, as protocols, so serving imports none of them.

The referral recorder (service.referrals) and the Prometheus metrics (service.api) implement
these; the app hands them to the Predictor.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias

from numpy.typing import NDArray

from service.serving.model import MCDropoutModel
from service.serving.results import Prediction

# A request's rows as the protocol decoded them: an array (V2 tensors) or nested lists (REST
# JSON, already checked to be numbers). model.prepare turns either into one normalised array.
Rows: TypeAlias = NDArray[Any] | list[Any]


class ReferralSink(Protocol):
    """Queues the abstained rows of an answered request for a person."""

    async def record(
        self, name: str, model: MCDropoutModel, inputs: Rows, pred: Prediction, request_id: str
    ) -> list[str | None]:
        """Referral ids per row (None for rows not referred); never raises."""
        ...


class PredictionObserver(Protocol):
    """Counts answered rows, samples, abstentions and uncertainties (Prometheus)."""

    def observe_prediction(self, model: str, result: Prediction) -> None: ...


__all__ = ["PredictionObserver", "ReferralSink", "Rows"]

"""The calibration watch as GET /v1/models/{name} and the reset route show it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.serving.watch import WatchView


class ReferralBand(BaseModel):
    """Two-sided Clopper-Pearson interval (level 1 - alpha) of the windowed referral rate."""

    low: float
    high: float


class CalibrationWatchPublic(BaseModel):
    """Whether live traffic is still exchangeable with the data the threshold was calibrated on."""

    status: Literal["holding", "shifted", "unavailable", "off"] = Field(
        description="holding: no evidence of a shift; shifted: the test martingale reached "
        "1/alpha, so the threshold's guarantee no longer holds (stays until reset or a new "
        "version); unavailable: no reference scores (see reason); off: disabled by setting."
    )
    reason: str | None = Field(default=None, description="Why the watch is unavailable or off.")
    martingale: float | None = Field(
        default=None, description="Test martingale value M; starts at 1, alarm at 1/alpha."
    )
    martingale_peak: float | None = Field(default=None, description="Largest M so far.")
    alarm_level: float | None = Field(default=None, description="1/alpha.")
    alpha: float | None = Field(default=None, description="False-alarm probability bound.")
    requests_tested: int | None = Field(
        default=None, description="Requests fed to the test (one random row of each)."
    )
    requests_skipped: int | None = Field(
        default=None, description="Requests not tested: drawn with another T or metric."
    )
    rows_seen: int | None = Field(default=None, description="Rows of the tested requests.")
    window_rows: int | None = Field(default=None, description="Tested rows in the window.")
    window_referral_rate: float | None = Field(
        default=None, description="Fraction of the window's tested rows over the threshold."
    )
    window_band: ReferralBand | None = Field(
        default=None, description="Clopper-Pearson interval of the windowed referral rate."
    )
    calibrated_referral_rate: float | None = Field(
        default=None, description="Fraction of the held-out reference rows over the threshold."
    )
    referral_rate_in_band: bool | None = Field(
        default=None, description="The calibrated rate lies inside the window's interval."
    )
    metric: str | None = Field(default=None, description="Uncertainty measure watched.")
    reference_rows: int | None = Field(default=None, description="Held-out reference scores.")
    calibrated_at: str | None = Field(default=None, description="When they were stored.")
    started_at: str | None = Field(default=None, description="When this test started.")
    shifted_at: str | None = Field(default=None, description="When the alarm was raised.")


def watch_public(view: WatchView) -> CalibrationWatchPublic:
    out = CalibrationWatchPublic(status=view.status, reason=view.reason)  # type: ignore[arg-type]
    w, s = view.watch, view.snapshot
    if w is None or s is None:
        return out
    out.martingale, out.martingale_peak = s.martingale, s.martingale_peak
    out.alarm_level, out.alpha = s.alarm_level, s.alpha
    out.requests_tested, out.requests_skipped = s.tested, w.requests_skipped
    out.rows_seen, out.window_rows = w.rows_seen, s.window_rows
    out.window_referral_rate = s.window_referral_rate
    out.window_band = ReferralBand(low=s.window_band[0], high=s.window_band[1])
    out.calibrated_referral_rate = s.calibrated_referral_rate
    out.referral_rate_in_band = s.referral_rate_in_band
    out.metric, out.reference_rows = w.reference.metric, w.reference.n
    out.calibrated_at, out.started_at, out.shifted_at = (
        w.reference.calibrated_at,
        w.started_at,
        w.shifted_at,
    )
    return out

"""The calibration watch in /metrics: gauges read from the watches at scrape time.

A collector rather than gauges set on every request: the prediction path only updates the test,
and the figures (the Clopper-Pearson band needs a Beta quantile) are computed when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.serving.watch import CalibrationWatches

_GAUGES = {
    "shifted": "1 when the model's calibration watch has raised its alarm (the threshold's "
    "guarantee no longer holds), 0 while holding.",
    "martingale": "Test martingale of the calibration watch; alarm at 1/alpha.",
    "alarm_level": "1/alpha: the martingale value that raises the alarm.",
    "requests_tested": "Requests fed to the calibration watch since it started.",
    "rows_seen": "Rows of the requests fed to the calibration watch since it started.",
    "window_referral_rate": "Referral rate over the watch's window of tested rows.",
    "window_band_low": "Lower end of the windowed referral rate's Clopper-Pearson interval.",
    "window_band_high": "Upper end of the windowed referral rate's Clopper-Pearson interval.",
    "calibrated_referral_rate": "Referral rate of the held-out reference rows.",
}


class WatchCollector(Collector):
    """mcdrop_calibration_watch_* gauges, one series per model with a running watch."""

    def __init__(self, watches: CalibrationWatches) -> None:
        self.watches = watches

    def _families(self) -> dict[str, GaugeMetricFamily]:
        return {
            k: GaugeMetricFamily(f"mcdrop_calibration_watch_{k}", doc, labels=["model"])
            for k, doc in _GAUGES.items()
        }

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fams = self._families()
        for name in self.watches.names():
            view = self.watches.view(name)
            w, s = view.watch, view.snapshot
            if w is None or s is None:
                continue
            values = {
                "shifted": 1.0 if s.status == "shifted" else 0.0,
                "martingale": s.martingale,
                "alarm_level": s.alarm_level,
                "requests_tested": float(s.tested),
                "rows_seen": float(w.rows_seen),
                "window_referral_rate": s.window_referral_rate,
                "window_band_low": s.window_band[0],
                "window_band_high": s.window_band[1],
                "calibrated_referral_rate": s.calibrated_referral_rate,
            }
            for k, v in values.items():
                if v is not None:
                    fams[k].add_metric([name], v)
        yield from fams.values()

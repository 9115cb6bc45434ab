"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

import contextlib

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.serving.results import Prediction

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Uncertainty is in the metric's own units (a std in target units, an entropy in nats), so the
# buckets span powers of two from 1/1024 to 8192 rather than assume one scale.
UNCERTAINTY_BUCKETS = tuple(2.0**k for k in range(-10, 14))
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ServiceMetrics:
    """Every metric the service exports, registered in its own CollectorRegistry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mcdrop_requests_total",
            "HTTP requests by route, model ('' when none) and status code.",
            ["route", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mcdrop_request_duration_seconds",
            "Time from request start to the end of the reply, by route, model and status.",
            ["route", "model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.mc_samples = Counter(
            "mcdrop_mc_samples_total",
            "Stochastic forward passes drawn: T per input row.",
            ["model"],
            registry=r,
        )
        self.rows = Counter(
            "mcdrop_predictions_total", "Input rows answered.", ["model"], registry=r
        )
        self.abstentions = Counter(
            "mcdrop_abstentions_total",
            "Rows whose uncertainty was over the threshold (referred).",
            ["model"],
            registry=r,
        )
        self.uncertainty = Histogram(
            "mcdrop_uncertainty",
            "The per-row uncertainty compared with the threshold, in the metric's units.",
            ["model"],
            buckets=UNCERTAINTY_BUCKETS,
            registry=r,
        )
        self.model_ready = Gauge(
            "mcdrop_model_ready", "1 when the model is loaded and serving.", ["model"], registry=r
        )
        self._add_batch_metrics(r)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._model_children: dict[str, tuple[Counter, Counter, Counter, Histogram]] = {}

    def _add_batch_metrics(self, r: CollectorRegistry) -> None:
        """What the dynamic batcher does: requests and rows per pass, and the queueing."""
        self.batch_jobs = Histogram(
            "mcdrop_batch_requests",
            "Requests stacked into one batched MC pass by the dynamic batcher.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.batch_rows = Histogram(
            "mcdrop_batch_stacked_rows",
            "Stacked rows (sum of N x T) of one batched MC pass.",
            ["model"],
            buckets=(100, 1_000, 3_000, 10_000, 30_000, 100_000, 1_000_000),
            registry=r,
        )
        self.batch_queue_delay = Histogram(
            "mcdrop_batch_queue_delay_seconds",
            "How long the oldest request of a batch waited before its pass started.",
            ["model"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )

    # Every request records a few series; `labels()` resolves a child by its label values each
    # time, so the children are kept here. Label sets are bounded: routes, statuses
    # and the names of models that exist (see the predict routes), and these series are never
    # removed, so a kept child never goes stale.

    def observe_request(self, route: str, model: str, status: int, seconds: float) -> None:
        key = (route, model, status)
        children = self._request_children.get(key)
        if children is None:
            labels = (route, model, str(status))
            children = self._request_children[key] = (
                self.requests.labels(*labels),
                self.latency.labels(*labels),
            )
        children[0].inc()
        children[1].observe(seconds)

    def observe_prediction(self, model: str, result: Prediction) -> None:
        children = self._model_children.get(model)
        if children is None:
            children = self._model_children[model] = (
                self.mc_samples.labels(model),
                self.rows.labels(model),
                self.abstentions.labels(model),
                self.uncertainty.labels(model),
            )
        mc_samples, rows, abstentions, hist = children
        mc_samples.inc(result.samples_drawn)  # adaptive rows each stop at their own T
        rows.inc(result.rows)
        abstentions.inc(int(np.count_nonzero(result.abstain)))
        for value in result.uncertainty.tolist():
            hist.observe(value)

    def observe_batch(self, model: str, rows: int, jobs: int, queue_delay_s: float) -> None:
        self.batch_jobs.labels(model).observe(jobs)
        self.batch_rows.labels(model).observe(rows)
        self.batch_queue_delay.labels(model).observe(queue_delay_s)

    def set_model_ready(self, model: str, ready: bool) -> None:
        self.model_ready.labels(model).set(1.0 if ready else 0.0)

    def forget_model(self, model: str) -> None:
        """A model folder was removed on reload: drop its readiness series."""
        with contextlib.suppress(KeyError):  # never published (e.g. loaded before metrics)
            self.model_ready.remove(model)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Referral metrics, registered in the app's own Prometheus registry (beside ServiceMetrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ReferralMetrics:
    """What /metrics says about the referral queue's write path and webhook."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry or CollectorRegistry()
        self.recorded = Counter(
            "mcdrop_referrals_recorded_total",
            "Referrals written to the database, straight from a prediction or replayed from "
            "the spool.",
            ["path"],
            registry=r,
        )
        self.store_failures = Counter(
            "mcdrop_referral_store_failures_total",
            "Referral writes that did not reach the database on the prediction path and went to "
            "the spool: timeout, error, unavailable (store down, backing off) or busy (too many "
            "writes in flight).",
            ["reason"],
            registry=r,
        )
        self.spooled = Counter(
            "mcdrop_referrals_spooled_total",
            "Referrals written to the local spool file for later replay.",
            registry=r,
        )
        self.spool_pending = Gauge(
            "mcdrop_referral_spool_pending",
            "Referrals in the spool waiting to be replayed into the database.",
            registry=r,
        )
        self.lost = Counter(
            "mcdrop_referrals_lost_total",
            "Referrals neither the database nor the spool took (the row's referral_id is null).",
            registry=r,
        )
        self.webhook = Counter(
            "mcdrop_referral_webhook_total",
            "Webhook notifications by outcome: delivered, failed (after every retry) or dropped "
            "(queue full).",
            ["outcome"],
            registry=r,
        )

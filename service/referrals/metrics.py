"""Referral metrics, registered in the app's own Prometheus registry (beside ServiceMetrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Rows of one group commit: one request's rows alone up to the rows of hundreds of requests.
ROWS_PER_COMMIT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


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
            "the spool: timeout, error, unavailable (store down, backing off).",
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
        self.commits = Counter(
            "mcdrop_referral_commits_total",
            "Group commits of referral rows, each one transaction (store) or one fsynced append "
            "(spool); rate() gives commits per second.",
            ["target"],
            registry=r,
        )
        self.commit_rows = Histogram(
            "mcdrop_referral_commit_rows",
            "Referral rows per group commit, by target (store or spool); _sum / _count gives the "
            "mean rows per commit.",
            ["target"],
            buckets=ROWS_PER_COMMIT_BUCKETS,
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

    def committed(self, target: str, rows: int) -> None:
        """One group commit of `rows` rows landed in `target` ("store" or "spool")."""
        self.commits.labels(target).inc()
        self.commit_rows.labels(target).observe(rows)

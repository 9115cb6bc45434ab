"""Request and response bodies of the review API (/v1/referrals), named by role."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.api.schemas import FiniteNumber
from service.referrals.models import Referral

ReviewerName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Who is reviewing (free text, no control characters).",
    ),
]


class ReferralResolution(BaseModel):
    """A person's answer to a referral."""

    reviewer: str = Field(description="Who answered.")
    label: int | None = Field(description="Class index (classifiers).")
    class_label: str | None = Field(description="That class's name, when the model has names.")
    value: list[float] | None = Field(description="One value per output (regression).")
    note: str | None = Field(description="The reviewer's note.")
    resolved_at: datetime = Field(description="When it was answered (UTC).")


class ReferralPublic(BaseModel):
    """One referred item: what the model saw and said, and the person's answer once given."""

    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(description="Referral id (the prediction row's referral_id).")
    status: Literal["pending", "resolved"] = Field(description="pending or resolved.")
    request_id: str = Field(description="Id of the prediction request that referred it.")
    row_index: int = Field(description="The row's position in that request's inputs.")
    model: str = Field(description="Model that abstained.")
    model_version: str = Field(description="That model's version.")
    task: Literal["regression", "classification"] = Field(description="The model's task.")
    created_at: datetime = Field(description="When the prediction was made (UTC).")
    input: Any | None = Field(
        description="The row as sent; null when the server keeps only hashes "
        "(MCDROP_REFERRAL_STORE_INPUTS=false)."
    )
    input_sha256: str = Field(
        description="SHA-256 of the row's values as little-endian float64, row-major."
    )
    input_shape: list[int] = Field(description="The model's input shape (one row).")
    feature_names: list[str] | None = Field(description="Input feature names, when known.")
    output_names: list[str] | None = Field(description="Regression output names.")
    class_labels: list[str] | None = Field(description="Classifier class names.")
    prediction: dict[str, Any] = Field(
        description="The row's full answer as the client got it: mean, variance, uncertainty, "
        "and std/epistemic/aleatoric variance (regression) or probabilities, label, entropy, "
        "mutual information, variation ratio (classification)."
    )
    uncertainty: float = Field(description="The value compared with the threshold.")
    threshold: float = Field(description="Abstain threshold used.")
    uncertainty_metric: str = Field(description="Uncertainty compared with the threshold.")
    seed: int = Field(description="Seed of the dropout masks; reproduces the prediction.")
    samples: int = Field(description="T, the number of stochastic passes.")
    claimed_by: str | None = Field(description="Reviewer holding a claim (may have expired).")
    claim_expires_at: datetime | None = Field(description="When that claim ends (UTC).")
    resolution: ReferralResolution | None = Field(description="The answer, once resolved.")

    @classmethod
    def of(cls, r: Referral) -> ReferralPublic:
        resolution = None
        if r.resolved_at is not None and r.reviewer is not None:
            names = r.class_labels
            resolution = ReferralResolution(
                reviewer=r.reviewer,
                label=r.label,
                value=r.value,
                note=r.note,
                resolved_at=r.resolved_at,
                class_label=names[r.label] if names and r.label is not None else None,
            )
        return cls(
            id=r.id,
            status=r.status,  # type: ignore[arg-type]
            request_id=r.request_id,
            row_index=r.row_index,
            model=r.model,
            model_version=r.model_version,
            task=r.task,  # type: ignore[arg-type]
            created_at=r.created_at,
            input=r.input,
            input_sha256=r.input_sha256,
            input_shape=r.input_shape,
            feature_names=r.feature_names,
            output_names=r.output_names,
            class_labels=r.class_labels,
            prediction=r.prediction,
            uncertainty=r.uncertainty,
            threshold=r.threshold,
            uncertainty_metric=r.metric,
            seed=r.seed,
            samples=r.samples,
            claimed_by=r.claimed_by,
            claim_expires_at=r.claim_expires_at,
            resolution=resolution,
        )


class ReferralPage(BaseModel):
    """One page of referrals."""

    items: list[ReferralPublic] = Field(description="The referrals on this page.")
    total: int = Field(description="How many match the filters, over all pages.")
    limit: int = Field(description="Page size asked for.")
    offset: int = Field(description="Items skipped before this page.")
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")


class ClaimRequest(BaseModel):
    """A reviewer takes a referral: others cannot claim or resolve it while the lease runs."""

    model_config = ConfigDict(extra="forbid")

    reviewer: ReviewerName
    lease_s: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Seconds the claim lasts (default MCDROP_REFERRAL_CLAIM_LEASE_S). Claiming "
        "again renews it.",
    )


class ResolveRequest(BaseModel):
    """A person's answer: a label for classifiers, a value for regression."""

    model_config = ConfigDict(extra="forbid")

    reviewer: ReviewerName
    label: (
        Annotated[int, Field(strict=True, ge=0)] | Annotated[str, Field(max_length=256)] | None
    ) = Field(
        default=None,
        description="Classifiers: the class index, or the class name when the model has "
        "class labels.",
    )
    value: list[FiniteNumber] | FiniteNumber | None = Field(
        default=None,
        description="Regression: one value per output (a bare number for one output).",
    )
    note: str | None = Field(default=None, max_length=2000, description="Optional note.")

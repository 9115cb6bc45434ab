"""The referral table. One row per abstained prediction row, self-describing: it keeps what a
reviewer needs to judge the item (input, shapes, names, the full uncertainty breakdown) even
after the model that referred it is gone.

The schema is created and changed only by the Alembic migrations in ./migrations; this module
is the ORM view of the newest revision, and a test checks the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

PENDING = "pending"
RESOLVED = "resolved"


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in Python, naive UTC in the column: SQLite has no time zones and
    PostgreSQL's `timestamp` then compares the same way, so claim expiry means one thing."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Referral(Base):
    """An item the model abstained on, waiting for (or answered by) a person."""

    __tablename__ = "referrals"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128))
    row_index: Mapped[int] = mapped_column(Integer)  # the row's position in its request
    model: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default=PENDING)

    # The input as sent (nested lists), or NULL when MCDROP_REFERRAL_STORE_INPUTS=false.
    input: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    input_sha256: Mapped[str] = mapped_column(String(64))
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    feature_names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    output_names: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    class_labels: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)

    # The row's answer as the client got it (mean, variance, probabilities, entropies...).
    prediction: Mapped[dict[str, Any]] = mapped_column(JSON)
    uncertainty: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    metric: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    samples: Mapped[int] = mapped_column(Integer)

    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    reviewer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    value: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_referrals_status_model_created", "status", "model", "created_at"),
        Index("ix_referrals_status_created", "status", "created_at"),
    )

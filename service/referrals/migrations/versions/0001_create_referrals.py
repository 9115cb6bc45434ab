"""Create the referrals table.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input", sa.JSON(), nullable=True),
        sa.Column("input_sha256", sa.String(64), nullable=False),
        sa.Column("input_shape", sa.JSON(), nullable=False),
        sa.Column("feature_names", sa.JSON(), nullable=True),
        sa.Column("output_names", sa.JSON(), nullable=True),
        sa.Column("class_labels", sa.JSON(), nullable=True),
        sa.Column("prediction", sa.JSON(), nullable=False),
        sa.Column("uncertainty", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claim_expires_at", sa.DateTime(), nullable=True),
        sa.Column("reviewer", sa.String(128), nullable=True),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
    )
    op.create_index(
        "ix_referrals_status_model_created", "referrals", ["status", "model", "created_at"]
    )
    op.create_index("ix_referrals_status_created", "referrals", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_referrals_status_created", table_name="referrals")
    op.drop_index("ix_referrals_status_model_created", table_name="referrals")
    op.drop_table("referrals")

"""A batch shared by several flow runs: which run took each document, and its last beat.

Revision ID: 0006_claims
Revises: 0005_metrics
Create Date: 2026-12-05 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_claims"
down_revision = "0005_metrics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("claimed_by")

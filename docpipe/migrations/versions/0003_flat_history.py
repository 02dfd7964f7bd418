"""Costs that stay flat as history grows: each batch records its counts; indexes for a
tenant's newest batches and latest start, the open batches, and a tenant's open documents.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _count(where: str) -> str:
    return f"(SELECT count(*) FROM documents d WHERE d.batch_id = batches.id{where})"


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("document_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("cancelled_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.drop_index("ix_batches_tenant_id")
        batch_op.create_index("ix_batches_tenant_id_created_at", ["tenant_id", "created_at"])
        batch_op.create_index("ix_batches_status_tenant_id", ["status", "tenant_id"])
        batch_op.create_index(
            "ix_batches_tenant_id_tier_started_at", ["tenant_id", "tier", "started_at"]
        )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_tenant_id")
        batch_op.create_index("ix_documents_tenant_id_status", ["tenant_id", "status"])
    # Every batch's counts as its documents stand; a batch that failed (the flow broke)
    # had none recorded before.
    counts = {
        "document_count": _count(""),
        "success_count": _count(" AND d.status = 'Ready'"),
        "failure_count": _count(" AND d.status IN ('ValidationFailed', 'OcrFailed')"),
        "cancelled_count": _count(" AND d.status = 'Cancelled'"),
    }
    op.execute("UPDATE batches SET " + ", ".join(f"{c} = {n}" for c, n in counts.items()))


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_tenant_id_status")
        batch_op.create_index("ix_documents_tenant_id", ["tenant_id"])
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_tenant_id_tier_started_at")
        batch_op.drop_index("ix_batches_status_tenant_id")
        batch_op.drop_index("ix_batches_tenant_id_created_at")
        batch_op.create_index("ix_batches_tenant_id", ["tenant_id"])
        batch_op.drop_column("cancelled_count")
        batch_op.drop_column("document_count")

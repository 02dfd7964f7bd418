"""Languages and outputs: a tenant's defaults, and each document's own.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05 07:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("languages", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("outputs", sa.String(length=64), nullable=True))
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("outputs", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("outputs")
        batch_op.drop_column("language")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("outputs")
        batch_op.drop_column("languages")

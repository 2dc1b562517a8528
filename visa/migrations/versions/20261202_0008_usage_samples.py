"""usage samples: instances, sessions and resources in use per cloud and flavour, over time

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cloud", sa.String(length=64), nullable=False),
        sa.Column("flavour", sa.String(length=64), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("active_sessions", sa.Integer(), nullable=False),
        sa.Column("cores", sa.Integer(), nullable=False),
        sa.Column("memory_mb", sa.Integer(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_samples")),
        sa.UniqueConstraint("taken_at", "cloud", "flavour", name=op.f("uq_usage_samples_taken_at")),
    )
    with op.batch_alter_table("usage_samples", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_usage_samples_taken_at"), ["taken_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_usage_samples_taken_at"))
    op.drop_table("usage_samples")

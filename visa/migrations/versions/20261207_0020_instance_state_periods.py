"""instance state periods: each instance's states over time, for the usage report

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 12:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instance_state_periods",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_instance_state_periods_instance_id_instances"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance_state_periods")),
    )
    with op.batch_alter_table("instance_state_periods", schema=None) as batch_op:
        batch_op.create_index("ix_instance_state_periods_instance", ["instance_id", "started_at", "ended_at", "state"],
                              unique=False)
        batch_op.create_index("ix_instance_state_periods_open", ["instance_id"], unique=True,
                              postgresql_where=sa.text("ended_at IS NULL"), sqlite_where=sa.text("ended_at IS NULL"))
    # What is known of the instances already there: their present state, since it was entered.
    op.execute(
        "INSERT INTO instance_state_periods (instance_id, state, started_at) "
        "SELECT id, state, COALESCE(state_changed_at, created_at) FROM instances "
        "WHERE deleted_at IS NULL AND state <> 'DELETED'"
    )


def downgrade() -> None:
    op.drop_table("instance_state_periods")

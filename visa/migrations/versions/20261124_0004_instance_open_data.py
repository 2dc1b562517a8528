"""instances remember the open data (embargo ended) their owner asked for

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instance_open_data",
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["experiment_id"],
            ["experiments.id"],
            name=op.f("fk_instance_open_data_experiment_id_experiments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_instance_open_data_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "experiment_id", name=op.f("pk_instance_open_data")),
    )
    with op.batch_alter_table("instance_open_data", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_open_data_experiment_id"), ["experiment_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("instance_open_data", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_open_data_experiment_id"))

    op.drop_table("instance_open_data")

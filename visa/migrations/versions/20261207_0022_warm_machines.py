"""warm machines: plans kept booted and unassigned, and the machines of their pools

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.add_column(sa.Column("warm", JSON, nullable=False, server_default=sa.text("'[]'")))
    op.create_table(
        "warm_machines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(16), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("cloud_id", sa.Integer(), nullable=False),
        sa.Column("cloud_server_id", sa.String(255), nullable=True),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("provider_state", JSON, nullable=False),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("instance_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_warm_machines_plan_id_plans"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["cloud_id"], ["clouds.id"], name=op.f("fk_warm_machines_cloud_id_clouds"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_warm_machines_instance_id_instances"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warm_machines")),
        sa.UniqueConstraint("uid", name=op.f("uq_warm_machines_uid")),
        sa.UniqueConstraint("instance_id", name=op.f("uq_warm_machines_instance_id")),
    )
    op.create_index(op.f("ix_warm_machines_plan_id"), "warm_machines", ["plan_id"])
    op.create_index(op.f("ix_warm_machines_cloud_id"), "warm_machines", ["cloud_id"])
    op.create_index(op.f("ix_warm_machines_state"), "warm_machines", ["state"])


def downgrade() -> None:
    op.drop_table("warm_machines")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("warm")

"""bookings: GPU machines held for the days of a beamtime; an instance's booking end

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bookings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("flavour_id", sa.Integer(), nullable=False),
        sa.Column("cloud_id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("proposal_id", sa.Integer(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("starts_on", sa.Date(), nullable=False),
        sa.Column("ends_on", sa.Date(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_by_id", sa.Integer(), nullable=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_bookings_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["flavour_id"], ["flavours.id"], name=op.f("fk_bookings_flavour_id_flavours"),
                                ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["cloud_id"], ["clouds.id"], name=op.f("fk_bookings_cloud_id_clouds"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"],
                                name=op.f("fk_bookings_experiment_id_experiments"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["proposal_id"], ["proposals.id"], name=op.f("fk_bookings_proposal_id_proposals"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["handled_by_id"], ["users.id"], name=op.f("fk_bookings_handled_by_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
    )
    op.create_index(op.f("ix_bookings_user_id"), "bookings", ["user_id"])
    op.create_index(op.f("ix_bookings_experiment_id"), "bookings", ["experiment_id"])
    op.create_index(op.f("ix_bookings_proposal_id"), "bookings", ["proposal_id"])
    op.create_index("ix_bookings_cloud_state_days", "bookings", ["cloud_id", "state", "starts_on", "ends_on"])
    op.create_table(
        "booking_instances",
        sa.Column("booking_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["booking_id"], ["bookings.id"], name=op.f("fk_booking_instances_booking_id_bookings"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"],
                                name=op.f("fk_booking_instances_instance_id_instances"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("booking_id", "instance_id", name=op.f("pk_booking_instances")),
        sa.UniqueConstraint("instance_id", name=op.f("uq_booking_instances_instance_id")),
    )
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("booked_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("booked_until")
    op.drop_table("booking_instances")
    op.drop_table("bookings")

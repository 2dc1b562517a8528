"""flavours: how long a machine of the size may stay idle before its owner is warned

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 12:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # None for the existing flavours: the owner's inactivity limit alone, as before.
    with op.batch_alter_table("flavours") as batch:
        batch.add_column(sa.Column("idle_warning_hours", sa.Integer(), nullable=True))
        batch.create_check_constraint(op.f("ck_flavours_idle_warning_positive"), "idle_warning_hours > 0")


def downgrade() -> None:
    with op.batch_alter_table("flavours") as batch:
        batch.drop_constraint(op.f("ck_flavours_idle_warning_positive"), type_="check")
        batch.drop_column("idle_warning_hours")
